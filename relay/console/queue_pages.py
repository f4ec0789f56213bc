"""The queue page: one row per (API_USER, receiving domain), a chart of one queue's 5 s series
refreshed every 5 s from ``queues/{api_user}/{domain}/series.json``, and the controls.

Everything goes through the queue service the API uses (``relay.service.queues``: the same
tenant rule, another account's queue is a 404) and so through QueueAdmin.
"""

from __future__ import annotations

import math
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.console.app import PREFIX, account_param, redirect, render, url
from relay.service import queues
from relay.service.errors import ApiError


async def queues_page(request: web.Request) -> web.Response:
    rows = await queues.list_queues(request, {})  # every queue; api_user/domain pick the chart
    want = (request.query.get("api_user"), request.query.get("domain"))
    chosen = next((q for q in rows if (q["api_user"], q["domain"]) == want), rows[0] if rows else None)
    acct = account_param(request)
    suffix = "?" + urlencode({"account": acct}) if acct else ""
    for q in rows:  # built once here: 1,000 rows render in well under the page's budget
        q["path"] = f"{PREFIX}queues/{quote(q['api_user'], safe='')}/{quote(q['domain'], safe='')}"
        q["action"] = q["path"] + suffix
        q["chart"] = url(request, "queues", api_user=q["api_user"], domain=q["domain"])
    return render(request, "queues.html", {"queues": rows, "chosen": chosen})


async def series(request: web.Request) -> web.Response:
    """The chart's data: the queue's row and its 5 s series (points of [time, in, try, out, pending])."""
    return web.json_response(await queues.show_queue(request, request.query), headers={"Cache-Control": "no-store"})


_DONE = {"recover": "Recovered {q}: {released} waiting recipients are being sent now.",
         "pause": "Paused {q}.", "resume": "Resumed {q}."}


async def act(request: web.Request) -> web.StreamResponse:
    """One queue's form: ``do`` = recover, pause, resume (the API's handlers) or rate (``max_rate``)."""
    form = await request.post()
    do = str(form.get("do", ""))
    if do == "rate":
        raw = str(form.get("max_rate", "")).strip()
        try:
            rate = float(raw) if raw else None
        except ValueError:
            raise ApiError(400, f"max_rate: {raw[:40]!r} is not a number of messages per second") from None
        if rate is not None and not math.isfinite(rate):
            raise ApiError(400, "max_rate: a number of messages per second")
        result = (await queues.apply_rate(request, rate)).to_json()
        cap = f"{result['max_rate']:g} messages per second" if result["max_rate"] else "no cap"
        text = f"Rate of {result['api_user']}/{result['domain']}: {cap}."
    elif do in _DONE:
        result = await queues.act(request, do)
        text = _DONE[do].format(q=f"{result['api_user']}/{result['domain']}", released=result.get("released", 0))
    else:
        raise ApiError(400, "do: one of recover, pause, resume, rate")
    return redirect(request, "queues", text, api_user=result["api_user"], domain=result["domain"])


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/queues", queues_page)
    r.add_get("/queues/{api_user}/{domain}/series.json", series)
    r.add_post("/queues/{api_user}/{domain}", act)
