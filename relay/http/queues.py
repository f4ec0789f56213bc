"""Our queue endpoints (EngageLab has none): the (API_USER, receiving domain) queues of this node.

``GET /v1/queues`` lists them (status, pending, In/Try/Out at 5/15/30 s, pause reason, reply,
next send time); ``GET /v1/queues/{api_user}/{domain}`` adds the 5 s series for the chart and the
waiting messages; ``POST …/pause|resume|recover`` and ``PUT …/rate`` control one (``recover``
sends everything waiting at once and answers how many recipients it ``released``). A customer sees
and controls only its own account's API users' queues: another account's queue is a 404, exactly
like a queue that does not exist. Queue state lives in this node's memory (QueueAdmin).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from relay.http.auth import SERVICES_KEY, principal
from relay.http.envelope import ApiError, json_body, ok, page
from relay.http.params import integer, text
from relay.http.services import QueueControl, QueueViewLike


def _admin(request: web.Request) -> QueueControl:
    q = request.app[SERVICES_KEY].queues
    if q is None:
        raise ApiError(503, "delivery is not enabled on this node: there are no queues")
    return q


async def _own_users(request: web.Request) -> set[str] | None:
    """API_USER names the caller may see (None: every one, for operators)."""
    p = principal(request)
    if p.admin:
        return None
    users = await request.app[SERVICES_KEY].storage.accounts.list_api_users(p.account_id)
    return {u.name for u in users}


async def _queue_key(request: web.Request) -> tuple[str, str]:
    api_user, domain = request.match_info["api_user"], request.match_info["domain"].lower()
    if not (0 < len(api_user) <= 128 and 0 < len(domain) <= 255):
        raise ApiError(400, "api_user and domain: 1 to 128 / 255 characters")
    own = await _own_users(request)
    if own is not None and api_user not in own:
        raise ApiError(404, f"no queue for API_USER {api_user!r} and domain {domain!r}")
    return api_user, domain


async def list_queues(request: web.Request) -> web.Response:
    admin = _admin(request)
    wanted = text(request.query, "api_user", max_len=128)
    own = await _own_users(request)
    views = [v.to_json() for v in admin.list(wanted) if own is None or v.api_user in own]
    return page(views, len(views))


async def show_queue(request: web.Request) -> web.Response:
    admin = _admin(request)
    limit = integer(request.query, "limit", 100, 1, 1000)
    api_user, domain = await _queue_key(request)
    try:
        return ok(admin.show(api_user, domain, limit))
    except LookupError as e:
        raise ApiError(404, str(e).strip("'\"")) from None


def _action(name: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        admin = _admin(request)
        api_user, domain = await _queue_key(request)
        try:
            return ok(getattr(admin, name)(api_user, domain).to_json())
        except LookupError as e:
            raise ApiError(404, str(e).strip("'\"")) from None

    return handler


pause_queue = _action("pause")
resume_queue = _action("resume")
recover_queue = _action("recover")


async def set_rate(request: web.Request) -> web.Response:
    body = await json_body(request)
    return ok((await apply_rate(request, body.get("max_rate"))).to_json())


async def apply_rate(request: web.Request, rate: Any) -> QueueViewLike:
    """Set the queue's ``max_rate`` (also the console's rate form)."""
    admin = _admin(request)
    api_user, domain = await _queue_key(request)
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate)
                             or not 0 <= rate <= 1_000_000):
        raise ApiError(400, "max_rate: a number of messages per second from 0 to 1000000, or null (0 or null: no cap)")
    try:
        return admin.set_rate(api_user, domain, float(rate) if rate else None)
    except LookupError as e:
        raise ApiError(404, str(e).strip("'\"")) from None
