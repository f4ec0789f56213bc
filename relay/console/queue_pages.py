"""The queue page: one row per (API_USER, receiving domain), a chart of one queue's 5 s series
refreshed every 5 s from ``queues/{api_user}/{domain}/series.json``, and the controls.

Everything goes through the queue service the API uses (``relay.service.queues``: the same
tenant rule, another account's queue is a 404) and so through QueueAdmin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.console.app import PREFIX, account_param, redirect, render, url
from relay.service import queues
from relay.service.errors import ApiError

# Columns the table sorts by. The service answers every queue of this node at once (no paging), so
# sorting here orders the whole set, not one page of it.
SORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "api_user": lambda q: (q["api_user"], q["domain"]),
    "domain": lambda q: (q["domain"], q["api_user"]),
    "status": lambda q: (q["status"], q["api_user"], q["domain"]),
    "pending": lambda q: (q["pending"], q["api_user"], q["domain"]),
    "in": lambda q: (q["in_rate"]["5s"], q["api_user"], q["domain"]),
    "try": lambda q: (q["try_rate"]["5s"], q["api_user"], q["domain"]),
    "out": lambda q: (q["out_rate"]["5s"], q["api_user"], q["domain"]),
}


async def queues_page(request: web.Request) -> web.Response:
    sort = request.query.get("sort", "") or "api_user"
    desc = request.query.get("dir", "") == "desc"
    if sort not in SORTS:
        raise ApiError(400, f"sort: one of {', '.join(SORTS)}")
    rows = await queues.list_queues(request, {})  # every queue; api_user/domain pick the chart
    rows.sort(key=SORTS[sort], reverse=desc)
    want = (request.query.get("api_user"), request.query.get("domain"))
    chosen = next((q for q in rows if (q["api_user"], q["domain"]) == want), rows[0] if rows else None)
    acct = account_param(request)
    suffix = "?" + urlencode({"account": acct}) if acct else ""
    for q in rows:  # built once here: 1,000 rows render in well under the page's budget
        q["path"] = f"{PREFIX}queues/{quote(q['api_user'], safe='')}/{quote(q['domain'], safe='')}"
        q["action"] = q["path"] + suffix
        q["chart"] = url(request, "queues", api_user=q["api_user"], domain=q["domain"])
    keep = {"api_user": want[0], "domain": want[1]} if chosen is not None and want[0] else {}
    heads = {k: {"aria": ("descending" if desc else "ascending") if k == sort else None,
                 "href": url(request, "queues", sort=k, dir="desc" if k == sort and not desc else None, **keep)}
             for k in SORTS}
    return render(request, "queues.html", {"queues": rows, "chosen": chosen, "heads": heads})


async def series(request: web.Request) -> web.Response:
    """The chart's data: the queue's row and its 5 s series (points of [time, in, try, out, pending])."""
    return web.json_response(await queues.show_queue(request, request.query), headers={"Cache-Control": "no-store"})


_DONE = {"recover": "Recovered {q}: {released} waiting recipients are being sent now.",
         "pause": "Paused {q}.", "resume": "Resumed {q}."}


async def act(request: web.Request) -> web.StreamResponse:
    """One queue's form: ``do`` = recover, pause, resume (the queue service) or rate (``max_rate``)."""
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
