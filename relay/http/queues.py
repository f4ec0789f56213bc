"""Our queue endpoints (EngageLab has none): the (API_USER, receiving domain) queues of this node.

``GET /v1/queues`` lists them (status, pending, In/Try/Out at 5/15/30 s, pause reason, reply,
next send time); ``GET /v1/queues/{api_user}/{domain}`` adds the 5 s series for the chart and the
waiting messages; ``POST …/pause|resume|recover`` and ``PUT …/rate`` control one (``recover``
sends everything waiting at once and answers how many recipients it ``released``). A customer sees
and controls only its own account's API users' queues: another account's queue is a 404, exactly
like a queue that does not exist. Queue state lives in this node's memory (QueueAdmin).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.http.envelope import json_body, ok, page
from relay.service import queues


async def list_queues(request: web.Request) -> web.Response:
    views = await queues.list_queues(request, request.query)
    return page(views, len(views))


async def show_queue(request: web.Request) -> web.Response:
    return ok(await queues.show_queue(request, request.query))


def _action(name: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return ok(await queues.act(request, name))

    return handler


pause_queue = _action("pause")
resume_queue = _action("resume")
recover_queue = _action("recover")


async def set_rate(request: web.Request) -> web.Response:
    body = await json_body(request)
    return ok((await queues.apply_rate(request, body.get("max_rate"))).to_json())
