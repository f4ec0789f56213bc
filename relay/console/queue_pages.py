"""The queue page: one row per (API_USER, receiving domain), a chart of one queue's 5 s series
refreshed every 5 s from ``queues/{api_user}/{domain}/series.json``, and the controls.

Everything goes through the queue service the API uses (``relay.service.queues``: the same
tenant rule, another account's queue is a 404) and so through QueueAdmin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from markupsafe import Markup

from relay.console.app import PREFIX, SESSION, account_param, redirect, render, url, when
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
    chart_suffix = "&" + urlencode({"account": acct}) if acct else ""
    sort_q = f"&sort={sort}" + ("&dir=desc" if desc else "") if sort != "api_user" or desc else ""
    csrf = escape(request[SESSION].csrf)
    html = []
    for i, q in enumerate(rows, 1):
        user, domain = quote(q["api_user"], safe=""), quote(q["domain"], safe="")
        q["path"] = f"{PREFIX}queues/{user}/{domain}"
        html.append(row_html(q, i, q is chosen, q["path"] + suffix,
                             f"{PREFIX}queues?api_user={user}&domain={domain}{sort_q}{chart_suffix}", csrf))
    keep = {"api_user": want[0], "domain": want[1]} if chosen is not None and want[0] else {}
    heads = {k: {"aria": ("descending" if desc else "ascending") if k == sort else None,
                 "href": url(request, "queues", sort=k, dir="desc" if k == sort and not desc else None, **keep)}
             for k in SORTS}
    return render(request, "queues.html", {"queues": rows, "chosen": chosen, "heads": heads,
                                           "rows_html": Markup("".join(html))})


def _rates(r: dict[str, float]) -> str:
    return f"{r['5s']:g} / {r['15s']:g} / {r['30s']:g}"


def row_html(q: dict[str, Any], i: int, chosen: bool, action: str, chart: str, csrf: str) -> str:
    """One queue's table row. Written here rather than in the template: at 1,000 queues, Jinja's
    per-expression escaping was most of the page's time (every value is escaped here, once)."""
    e = escape
    status = e(q["status"])
    pause = ""
    if q["status"] == "paused":
        pause = f"<div>{e(q['pause_reason'] or 'paused')}</div>"
        if q["pause_reply"]:
            pause += f'<div class="reason">Last reply: {e(q["pause_reply"])}</div>'
        if q["next_send_time"]:
            pause += f"<div>Next send: {e(when(q['next_send_time']))}</div>"
    toggle = ('<button type="submit" name="do" value="resume">Resume</button>'
              if q["status"] == "paused" and not q["pause_reply"]
              else '<button type="submit" name="do" value="pause">Pause</button>')
    chosen_attr = ' class="chosen"' if chosen else ""
    long_tag = ' <span class="tag">long pause</span>' if q["long_pause"] else ""
    rate = e(f"{q['max_rate']:g}") if q["max_rate"] else ""
    return (
        f'<tr data-queue="{e(q["api_user"])}/{e(q["domain"])}"{chosen_attr}>'
        f'<td>{e(q["api_user"])}</td><td><a href="{e(chart)}">{e(q["domain"])}</a></td>'
        f'<td><span class="qs qs-{status}">{status}</span>'
        f"{long_tag}</td>"
        f'<td class="num" data-field="pending">{int(q["pending"])}</td>'
        f'<td class="num">{_rates(q["in_rate"])}</td><td class="num">{_rates(q["try_rate"])}</td>'
        f'<td class="num">{_rates(q["out_rate"])}</td><td>{pause}</td>'
        f'<td class="actions"><form method="post" action="{e(action)}">'
        f'<input type="hidden" name="csrf" value="{csrf}">'
        '<button type="submit" name="do" value="recover" title="Send everything waiting in this queue now">'
        f'Recover</button> {toggle} <span class="rate"><label for="rate-{i}">Max rate /s</label> '
        f'<input id="rate-{i}" name="max_rate" inputmode="decimal" size="5" '
        f'value="{rate}" placeholder="none"> '
        '<button type="submit" name="do" value="rate">Set</button></span></form></td></tr>\n')


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
