"""``GET /v1/rules/unclassified`` (operators): the replies and bounces no phrase rule recognised,
most frequent first, as ``mailrelay rules unclassified --json`` prints them (README "Classification
review"). Customers get 403: the texts come from every account's mail."""

from __future__ import annotations

from aiohttp import web

from relay.http.auth import SERVICES_KEY, require_admin
from relay.http.envelope import ApiError, page
from relay.http.params import integer, text
from relay.rules.review import unclassified_json

SOURCES = ("delivery", "feedback")
MAX_LIMIT = 1000


async def unclassified(request: web.Request) -> web.Response:
    require_admin(request)
    q = request.query
    source = text(q, "source")
    if source is not None and source not in SOURCES:
        raise ApiError(400, f"source: one of {', '.join(SOURCES)}")
    limit = integer(q, "limit", 100, 1, MAX_LIMIT)
    rows = await request.app[SERVICES_KEY].storage.unclassified.list(source, limit=limit)
    return page([unclassified_json(r) for r in rows], len(rows))
