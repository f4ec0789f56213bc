"""The five suppression lists of an account, EngageLab-compatible:

- ``GET|DELETE /v1/complaints``  (``email``, ``reason``, ``complaint_time``, ``expire_time``; 180 days)
- ``GET|POST|DELETE /v1/blocks``  (``block_id``, ``email_or_domain``, ``api_user`` one API_USER or
  ``all``, ``create_time``, ``expire_time``)
- ``GET /v1/bounces``  (``email``, ``reason``, ``bounce_time``, ``expire_time``, ``count``)
- ``GET|POST|DELETE /v1/unsubscribes``  (``email``, ``api_user``, ``type`` 0–3, ``unsubscribe_time``,
  ``expire_time``)
- ``GET|POST|DELETE /v1/no_interceptions``  (``email_or_domain``, ``api_user``, ``create_time``)

Times in EngageLab's format of each list (``times.py``). GET pages with ``offset``/``limit``
(0–100, default 100; 0 answers only ``total``) and filters on the value and on the creation
period: EngageLab's ``start_date``/``end_date`` (whole days, inclusive; at most 3 months on blocks
and unsubscribes, and ignored on unsubscribes when ``email`` is given, as EngageLab does) or our
``start_time``/``end_time`` (date-times). POST takes a JSON object; DELETE takes the values in the
query (``;`` or ``,`` separated). Unknown parameters and body fields are 400s (``contract.py``).
The account always comes from the credentials (operators pass ``account=NAME``); an ``api_user``
that is not one of that account's API users is a 400, so it cannot reach another account.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from relay.http.envelope import json_body, no_request_timeout, ok
from relay.service import lists
from relay.service.lists import LISTS as LISTS  # re-exported: the route table and tests read it
from relay.service.lists import ListApi


def _get(spec: ListApi) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        return ok(await lists.list_entries(request, spec, request.query))

    return handler


def _post(spec: ListApi) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        return ok({"count": await lists.add_entries(request, spec, await json_body(request))})

    return handler


def _delete(spec: ListApi) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        return ok(await lists.delete_entries(request, spec, request.query))

    return handler


def routes() -> list[tuple[str, str, Callable[[web.Request], Any], ListApi]]:
    makers = {"GET": _get, "POST": _post, "DELETE": _delete}
    return [(m, spec.path, makers[m](spec), spec) for spec in LISTS for m in spec.methods]


@no_request_timeout  # a large file may take long; the upload bounds the wait for each line instead
async def upload_blocks(request: web.Request) -> web.Response:
    """``POST /v1/blocks/upload``: see :func:`relay.service.lists.upload_blocks`."""
    return ok(await lists.upload_blocks(request))
