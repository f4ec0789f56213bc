"""``GET /v1/email_status`` and ``GET /v1/messages/{email_id}``: per-recipient status records.

EngageLab-compatible parameters: ``offset``, ``limit`` (0–100, default 100; 0 answers only
``total``), ``send_date`` (one day; with ``email``, that day and the 29 after it) or
``start_date``/``end_date`` (inclusive days, at most 30 consecutive days — a longer period is a
400 that says so), ``email``, ``email_ids`` (``;`` or ``,`` list of message ids or per-recipient
``MESSAGE_ID$recipient`` ids), ``api_user``, ``domain_name``, ``label_id``, ``status`` (18, 1, 5,
4; list), ``sub_status`` (list; when given, ``status`` is ignored, as EngageLab does); ours:
``email_type``, ``cursor``, and ``account`` for operators. Without any date the last 30 days are
searched (unless ``email_ids`` names the messages). Any other parameter is a 400. Each record
carries its full send log and its feedback events. The account always comes from the credentials,
so an ``api_user`` filter can only narrow.

Deep pages: ``offset`` walks are O(offset) for the database, so each page also answers
``next_cursor`` (null on the last page); passing it back as ``cursor`` (with the same filters)
returns the following page by keyset — the same cost at any depth, and no record skipped or
repeated while new mail arrives. ``total`` counts the whole filter (capped by storage) when the
first page is asked for; the cursor carries it on, so a walk through the pages counts only once.
"""

from __future__ import annotations

from aiohttp import web

from relay.http.envelope import ApiError, ok
from relay.service.access import SEARCH_LIMITER_KEY, SERVICES_KEY, principal, scope_account
from relay.service.params import MAX_TEXT, integer, text
from relay.service.status_query import (
    MAX_LIMIT,
    Cursor,
    decode_cursor,
    encode_cursor,
    search_fingerprint,
    status_filter,
)
from relay.status_json import record_json, split_email_id


async def email_status(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    q = request.query
    offset = integer(q, "offset", 0, 0, 1_000_000)
    limit = integer(q, "limit", MAX_LIMIT, 0, MAX_LIMIT)
    cursor_text = text(q, "cursor", max_len=1024)
    cursor = decode_cursor(cursor_text) if cursor_text else None
    if cursor is not None and offset:
        raise ApiError(400, "cursor: give either offset or cursor, not both")
    flt = await status_filter(request, q)
    fingerprint = search_fingerprint(flt)
    if cursor is not None and cursor.search != fingerprint:
        raise ApiError(400, "cursor: it continues another search; repeat the first page's parameters (a "
                            "default 30-day window moves at midnight UTC: then start again)")
    p = principal(request)
    request.app[SEARCH_LIMITER_KEY].check(f"account:{flt.account_id}" if not p.admin else "admin", "status searches")
    result = await services.storage.statuses.search(
        flt, limit=limit, offset=offset, with_log=True,
        after=cursor.after if cursor else None, count=cursor is None)
    total = cursor.total if cursor else result.total
    return ok({
        "result": [record_json(r) for r in result.items], "count": len(result.items), "total": total,
        "next_cursor": encode_cursor(Cursor(result.items[-1].key, total, fingerprint))
        if result.has_more and result.items else None,
    })


async def message(request: web.Request) -> web.Response:
    """A message id answers every recipient of the message; a ``MESSAGE_ID$recipient`` id that one."""
    raw = request.match_info["email_id"]
    email_id, recipient = split_email_id(raw)
    if not 0 < len(email_id) <= 64 or len(raw) > 64 + 1 + MAX_TEXT:
        raise ApiError(400, "email_id: a message id (1 to 64 characters), or MESSAGE_ID$recipient")
    account_id = await scope_account(request, required=False)
    rows = await request.app[SERVICES_KEY].storage.statuses.get_message(email_id, account_id)
    if recipient is not None:
        rows = [r for r in rows if r.recipient == recipient]
    if not rows:
        raise ApiError(404, f"no message {raw!r}")
    return ok({"result": [record_json(r) for r in rows], "count": len(rows), "total": len(rows)})

