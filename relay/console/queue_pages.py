"""The queue page: one row per (API_USER, receiving domain), a chart of one queue's 5 s series
refreshed every 5 s from ``queues/{api_user}/{domain}/series.json``, and the controls.

Everything goes through the API's queue handlers (the same tenant rule: another account's queue
is a 404) and so through QueueAdmin.
"""

from __future__ import annotations

import math

from aiohttp import web

from relay.console.app import Handler, api_json, redirect, render, with_query
from relay.http import queues
from relay.http.auth import PRINCIPAL
from relay.http.envelope import ApiError


async def queues_page(request: web.Request) -> web.Response:
    data = await api_json(queues.list_queues, with_query(request, {}))  # every queue; api_user/domain pick the chart
    rows = data["result"]
    chosen = next((q for q in rows if q["api_user"] == request.query.get("api_user")
                   and q["domain"] == request.query.get("domain")), rows[0] if rows else None)
    return render(request, "queues.html", {"queues": rows, "chosen": chosen,
                                           "operator": request[PRINCIPAL].admin})


async def series(request: web.Request) -> web.Response:
    """The chart's data: the queue's row and its 5 s series (points of [time, in, try, out])."""
    return web.json_response(await api_json(queues.show_queue, request), headers={"Cache-Control": "no-store"})


def _action(name: str, done: str) -> Handler:
    api = getattr(queues, f"{name}_queue")

    async def handler(request: web.Request) -> web.StreamResponse:
        result = await api_json(api, request)
        q = f"{result['api_user']}/{result['domain']}"
        text = done.format(q=q, released=result.get("released", 0))
        return redirect(request, "queues", text, api_user=result["api_user"], domain=result["domain"])

    return handler


async def set_rate(request: web.Request) -> web.StreamResponse:
    raw = str((await request.post()).get("max_rate", "")).strip()
    try:
        rate = float(raw) if raw else None
    except ValueError:
        raise ApiError(400, f"max_rate: {raw[:40]!r} is not a number of messages per second") from None
    if rate is not None and not math.isfinite(rate):
        raise ApiError(400, "max_rate: a number of messages per second")
    result = (await queues.apply_rate(request, rate)).to_json()
    cap = f"{result['max_rate']:g} messages per second" if result["max_rate"] else "no cap"
    return redirect(request, "queues", f"Rate of {result['api_user']}/{result['domain']}: {cap}.",
                    api_user=result["api_user"], domain=result["domain"])


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/queues", queues_page)
    r.add_get("/queues/{api_user}/{domain}/series.json", series)
    r.add_post("/queues/{api_user}/{domain}/recover",
               _action("recover", "Recovered {q}: {released} waiting recipients are being sent now."))
    r.add_post("/queues/{api_user}/{domain}/pause", _action("pause", "Paused {q}."))
    r.add_post("/queues/{api_user}/{domain}/resume", _action("resume", "Resumed {q}."))
    r.add_post("/queues/{api_user}/{domain}/rate", set_rate)
