"""Status search, one message's page, tracking events and offline exports.

The status page builds its filter with ``relay.service.status_query.status_filter`` (the API's
parameter names, 30-day rule and message) and pages with the same keyset cursor; "Export these
results" queues an export of the same filters through ``relay.service.exports`` (as
``POST /v1/exports`` does), which also serves download and retry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from relay.console.app import redirect, render, services
from relay.service import exports
from relay.service.access import EXPORT_LIMITER_KEY, PRINCIPAL, SEARCH_LIMITER_KEY, scope_account
from relay.service.errors import ApiError
from relay.service.status_query import (
    MAX_DAYS,
    Cursor,
    decode_cursor,
    encode_cursor,
    search_fingerprint,
    status_filter,
)
from relay.status_json import event_json
from storage.records import EmailType, LogKind, Status, StatusRecord, SubStatus, UnsubscribeReason

SHARED_KEYS = (SEARCH_LIMITER_KEY, EXPORT_LIMITER_KEY)
PAGE_SIZE = 50
EXPORTS_PAGE = 20
FILTERS = ("email", "email_type", "label_id", "api_user", "start_date", "end_date", "status", "sub_status")


def label(e: Status | SubStatus | None) -> str:
    return "" if e is None else e.name.replace("SB_", "").replace("_", " ").lower()


def _form(request: web.Request) -> dict[str, str]:
    """The filter form's values; the period defaults to the last 30 days, shown in the form."""
    q = request.query
    form = {k: q.get(k, "").strip() for k in FILTERS}
    if not form["start_date"] and not form["end_date"]:
        today = services(request).clock().date()
        form["start_date"] = (today - timedelta(days=MAX_DAYS - 1)).isoformat()
        form["end_date"] = today.isoformat()
    return form


ORDERS = {"newest": False, "oldest": True}  # the two orders the status search keeps (keyset, indexed)


def _order(request: web.Request) -> str:
    order = request.query.get("order", "") or "newest"
    if order not in ORDERS:
        raise ApiError(400, "order: newest or oldest (the orders the status search keeps)")
    return order


def event_rows(r: StatusRecord) -> list[dict[str, Any]]:
    """The record's events as the API answers them (``event_json``: opens, clicks, unsubscribes and
    the feedback lines of bounces and complaints), oldest first, plus the unsubscribe reason's text."""
    out = []
    for e in r.log:
        if e.kind is LogKind.FEEDBACK:
            ev = event_json(e)
            rt = ev["reason_type"]
            ev["reason_text"] = UnsubscribeReason(rt).text if rt in (0, 1, 2, 3) else None
            out.append(ev)
    return out


async def _search(request: web.Request, form: dict[str, str], order: str, *, with_log: bool) -> dict[str, Any]:
    """One page of the status search (PAGE_SIZE records) for ``form``, in ``order``, continuing the
    ``cursor`` of the query when there is one; the same filter, limiter and cursor as the API."""
    cursor_text = request.query.get("cursor", "")
    cursor = decode_cursor(cursor_text) if cursor_text else None
    flt = await status_filter(request, form)
    oldest = ORDERS[order]
    fingerprint = search_fingerprint(flt) + ("-oldest" if oldest else "")
    if cursor is not None and cursor.search != fingerprint:
        raise ApiError(400, "this page link belongs to another search; search again")
    p = request[PRINCIPAL]
    request.app[SEARCH_LIMITER_KEY].check(f"account:{flt.account_id}" if not p.admin else "admin", "status searches")
    result = await services(request).storage.statuses.search(
        flt, limit=PAGE_SIZE, offset=0, with_log=with_log, after=cursor.after if cursor else None,
        count=cursor is None, oldest_first=oldest)
    total = cursor.total if cursor else result.total
    return {"records": result.items, "total": total, "paged": cursor is not None,
            "next_cursor": encode_cursor(Cursor(result.items[-1].key, total, fingerprint))
            if result.has_more and result.items else None}


def _choices() -> dict[str, Any]:
    return {"statuses": list(Status), "sub_statuses": list(SubStatus), "email_types": list(EmailType),
            "label": label, "max_days": MAX_DAYS}


async def status_page(request: web.Request) -> web.Response:
    form = _form(request)
    ctx: dict[str, Any] = {"form": form, "records": None, "error": None, "next_cursor": None, "total": None,
                           "order": "newest", **_choices()}
    try:
        ctx["order"] = _order(request)
        ctx["query"] = form
        ctx.update(await _search(request, form, ctx["order"], with_log=False))
    except ApiError as e:
        ctx["error"] = e.message
    return render(request, "status.html", ctx, status=200 if ctx["error"] is None else 400)


async def message_page(request: web.Request) -> web.Response:
    email_id = request.match_info["email_id"]
    if not 0 < len(email_id) <= 64:
        raise ApiError(400, "email_id: expected 1 to 64 characters")
    account_id = await scope_account(request, required=False)
    rows = await services(request).storage.statuses.get_message(email_id, account_id)
    if not rows:
        raise ApiError(404, f"There is no message {email_id!r} in this account.")
    return render(request, "message.html", {"email_id": email_id, "rows": rows, "events": event_rows,
                                            "label": label})


async def export_results(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    body = {k: str(form[k]) for k in FILTERS if form.get(k)}
    task = await exports.create_task(request, body)
    return redirect(request, "exports", f"Export {task.id} was created; it appears below and is ready when it says "
                                        "succeeded.")


TRACKED = ("open", "click")


async def tracking_page(request: web.Request) -> web.Response:
    """Opens and clicks per email: the status search's page of records (same filters, order and
    cursor), each with its opens and clicks; ``event`` (open/click) and ``machine=hide`` narrow the
    events shown."""
    form = _form(request)
    event = request.query.get("event", "")
    machine = request.query.get("machine", "")
    ctx: dict[str, Any] = {"form": form, "groups": [], "error": None, "order": "newest", "event": event,
                           "machine": machine, "records": None, "next_cursor": None, "without": 0, **_choices()}
    try:
        if event not in ("", *TRACKED):
            raise ApiError(400, "event: open or click (or empty for both)")
        if machine not in ("", "hide"):
            raise ApiError(400, "machine: hide (or empty to show machine opens, marked)")
        ctx["order"] = _order(request)
        ctx["query"] = {**form, "event": event, "machine": machine}
        ctx.update(await _search(request, form, ctx["order"], with_log=True))
        for r in ctx["records"]:
            evs = [e for e in event_rows(r) if e["type"] in TRACKED and (not event or e["type"] == event)
                   and not (machine == "hide" and e["machine"])]
            if evs:
                ctx["groups"].append((r, evs))
        ctx["without"] = len(ctx["records"]) - len(ctx["groups"])
    except ApiError as e:
        ctx["error"] = e.message
    return render(request, "tracking.html", ctx, status=200 if ctx["error"] is None else 400)


async def exports_page(request: web.Request) -> web.Response:
    offset = request.query.get("offset", "") or "0"
    data = await exports.list_tasks(request, {"offset": offset, "limit": str(EXPORTS_PAGE)})
    return render(request, "exports.html", {"tasks": data["result"], "total": data["total"],
                                            "offset": int(offset), "page_size": EXPORTS_PAGE})


async def retry_export(request: web.Request) -> web.StreamResponse:
    await exports.retry_task(request)
    return redirect(request, "exports", f"Export {request.match_info['export_id']} was queued again.")


async def download_export(request: web.Request) -> web.StreamResponse:
    return exports.file_response(*await exports.task_file(request))


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/status", status_page)
    r.add_get("/status/{email_id}", message_page)
    r.add_post("/exports/new", export_results)
    r.add_get("/tracking", tracking_page)
    r.add_get("/exports", exports_page)
    r.add_get("/exports/{export_id}/download", download_export)
    r.add_post("/exports/{export_id}/retry", retry_export)
