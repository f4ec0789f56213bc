"""The status search's filter and keyset cursor, shared by ``GET /v1/email_status``, offline
exports and the console's status and tracking pages (one set of parameter names, one 30-day rule,
one message when a period is longer).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from aiohttp import web

from relay.service.access import SERVICES_KEY, scope_account
from relay.service.errors import ApiError, unstorable
from relay.service.labels import label_filter
from relay.service.params import enum_list, parse_day, text, text_list
from relay.status_json import split_email_id
from storage.records import EmailType, Status, StatusFilter, StatusKey, SubStatus

MAX_DAYS = 30
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MAX_CURSOR_MS = (datetime(9000, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
MAX_LIMIT = 100


def _period(q: Mapping[str, str], today: datetime,
            max_days: int | None = MAX_DAYS) -> tuple[datetime | None, datetime | None]:
    """The request_time window. ``max_days=None`` (exports): no cap, and no dates means all time."""
    send_date, start_raw, end_raw = text(q, "send_date"), text(q, "start_date"), text(q, "end_date")
    if send_date and (start_raw or end_raw):
        raise ApiError(400, "send_date: give either send_date or start_date/end_date, not both")
    if send_date:
        d = parse_day(send_date, "send_date")
        # EngageLab: a send_date with an email covers the 30 days from that date on
        days = MAX_DAYS if text(q, "email") else 1
        return _midnight(d), _midnight(d) + timedelta(days=days)
    if start_raw or end_raw:
        if not (start_raw and end_raw):
            raise ApiError(400, "start_date and end_date: give both (YYYY-MM-DD, inclusive)")
        start, end = parse_day(start_raw, "start_date"), parse_day(end_raw, "end_date")
        if end < start:
            raise ApiError(400, "end_date: must not be before start_date")
        days = (end - start).days + 1
        if max_days is not None and days > max_days:
            raise ApiError(400, f"the period covers {days} days; one query covers at most {MAX_DAYS} consecutive "
                                "days (use an offline export for longer periods)")
        return _midnight(start), _midnight(end) + timedelta(days=1)
    if text(q, "email_ids") or max_days is None:
        return None, None
    end_day = today.date()
    return _midnight(end_day - timedelta(days=MAX_DAYS - 1)), _midnight(end_day) + timedelta(days=1)


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


async def status_filter(request: web.Request, q: Mapping[str, str], *, max_days: int | None = MAX_DAYS,
                        account_required: bool = False) -> StatusFilter:
    """The StatusFilter of the status-search parameters in ``q`` (also used by exports, uncapped)."""
    start, end = _period(q, request.app[SERVICES_KEY].clock(), max_days)
    email = text(q, "email")
    domain = text(q, "domain_name", max_len=255)
    email_type_raw = text(q, "email_type")
    try:
        email_type = EmailType(email_type_raw) if email_type_raw else None
    except ValueError:
        raise ApiError(400, "email_type: one of transactional, marketing") from None
    email_ids = text_list(q, "email_ids")
    if len(email_ids) > MAX_LIMIT:
        raise ApiError(400, f"email_ids: at most {MAX_LIMIT} ids")
    ids = [split_email_id(v) for v in email_ids]
    sub_statuses = tuple(enum_list(q, "sub_status", SubStatus))
    statuses = tuple(enum_list(q, "status", Status))
    account_id = await scope_account(request, required=account_required)
    return StatusFilter(
        account_id=account_id,
        recipient=email.strip().lower() if email else None,
        email_ids=tuple(dict.fromkeys(e for e, r in ids if r is None)),
        recipient_ids=tuple(dict.fromkeys((e, r) for e, r in ids if r is not None)),
        api_user=text(q, "api_user", max_len=128),
        domain=domain.strip().lower() if domain else None,
        label=await label_filter(request, account_id, text(q, "label_id")),
        email_type=email_type,
        statuses=() if sub_statuses else statuses,  # validated either way
        sub_statuses=sub_statuses,
        start=start, end=end,
    )


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts, the total counted for the first page (a walk counts once), and
    a fingerprint of the search (account and filters) the cursor belongs to."""

    after: StatusKey
    total: int
    search: str


def search_fingerprint(flt: StatusFilter) -> str:
    """Identifies one search: a cursor only continues the search it came from."""
    return hashlib.sha256(repr(flt).encode()).hexdigest()[:16]


def encode_cursor(cursor: Cursor) -> str:
    """The opaque ``next_cursor`` of a page: its last record's place in the search order."""
    key = cursor.after
    raw = json.dumps([(key.request_time - _EPOCH) // _MS, key.email_id, key.recipient, cursor.total, cursor.search],
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    bad = ApiError(400, "cursor: not a next_cursor value returned by this API")
    if len(text) > 1024:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        ms, email_id, recipient, total, search = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise bad from None
    if not (type(ms) is int and 0 <= ms < _MAX_CURSOR_MS and isinstance(email_id, str)
            and isinstance(recipient, str) and not unstorable(email_id + recipient)
            and type(total) is int and 0 <= total < 2**53 and isinstance(search, str)):
        raise bad
    return Cursor(StatusKey(_EPOCH + ms * _MS, email_id, recipient), total, search)


