"""The five suppression lists of an account (EngageLab's shapes), for the HTTP API's ``/v1/complaints``,
``/v1/blocks``, ``/v1/bounces``, ``/v1/unsubscribes``, ``/v1/no_interceptions`` and the console's
list pages: read a page, add, delete, upload a block file. Every write goes through the one
suppression service (``policies``). The account comes from the principal (operators name one);
an ``api_user`` that is not one of that account's API users is a 400, never a wider scope.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from policies import SuppressionService
from relay.commands.listfile import parse_line
from relay.commands.values import normalize_value
from relay.rules import packaged_tencent_rules
from relay.service.access import SERVICES_KEY, scope_account
from relay.service.errors import ApiError
from relay.service.params import (
    body_int,
    body_text,
    body_time,
    body_values,
    integer,
    months_later,
    parse_day,
    text,
    text_list,
    time_param,
)
from relay.service.times import plain, zoned
from storage.protocols import Storage
from storage.records import ALL_API_USERS, ListKind, SuppressionEntry, UnsubscribeReason, utcnow

MAX_LIMIT = 100
MAX_MONTHS = 3  # EngageLab: a blocks or unsubscribes period covers at most 3 months


def _lists(storage: Storage) -> SuppressionService:
    """Every list write goes through the one suppression service (it owns the expiry rules)."""
    return SuppressionService(storage, packaged_tencent_rules())




@dataclass(frozen=True)
class ListApi:
    kind: ListKind
    path: str
    value_field: str  # "email" or "email_or_domain"
    row: Callable[[SuppressionEntry], dict[str, Any]]
    methods: tuple[str, ...]
    max_months: int | None = None  # cap on a start_date/end_date period
    email_ignores_period: bool = False


def _expired(e: SuppressionEntry) -> bool:
    """Past its expiry: listed until it is removed, but no longer stops mail."""
    return e.expires_at is not None and e.expires_at <= utcnow()


def block_id(e: SuppressionEntry) -> int:
    """EngageLab's integer ``block_id``: derived from the entry's key (account, value, scope), so it
    is the same on every call and every node without a column of its own; 52 bits keep it exact in
    JSON clients that read numbers as doubles."""
    key = f"{e.account_id}\0{e.value}\0{e.api_user}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 12


def _complaint(e: SuppressionEntry) -> dict[str, Any]:
    return {"email": e.value, "reason": e.reason, "complaint_time": zoned(e.created_at),
            "expire_time": zoned(e.expires_at), "api_user": e.api_user, "expired": _expired(e),
            "create_time": zoned(e.created_at)}  # create_time: the name before complaint_time, for one release


def _block(e: SuppressionEntry) -> dict[str, Any]:
    return {"block_id": block_id(e), "api_user": e.api_user, "email_or_domain": e.value,
            "create_time": plain(e.created_at), "expire_time": plain(e.expires_at), "reason": e.reason,
            "expired": _expired(e)}


def _bounce(e: SuppressionEntry) -> dict[str, Any]:
    return {"email": e.value, "reason": e.reason, "bounce_time": zoned(e.created_at),
            "expire_time": zoned(e.expires_at), "count": e.hit_count, "expired": _expired(e)}


def _unsubscribe(e: SuppressionEntry) -> dict[str, Any]:
    code = UnsubscribeReason(e.reason_code) if e.reason_code in (0, 1, 2, 3) else UnsubscribeReason.NOT_WANTED
    # the reason text is the code's (SPEC §7) unless one was given with the entry
    return {"email": e.value, "api_user": e.api_user, "type": int(code), "unsubscribe_time": zoned(e.created_at),
            "expire_time": zoned(e.expires_at), "reason": e.reason or code.text}


def _no_interception(e: SuppressionEntry) -> dict[str, Any]:
    return {"api_user": e.api_user, "email_or_domain": e.value, "create_time": plain(e.created_at)}


LISTS = (
    ListApi(ListKind.COMPLAINT, "/v1/complaints", "email", _complaint, ("GET", "DELETE")),
    ListApi(ListKind.BLOCK, "/v1/blocks", "email_or_domain", _block, ("GET", "POST", "DELETE"), MAX_MONTHS),
    ListApi(ListKind.BOUNCE, "/v1/bounces", "email", _bounce, ("GET",)),
    ListApi(ListKind.UNSUBSCRIBE, "/v1/unsubscribes", "email", _unsubscribe, ("GET", "POST", "DELETE"),
            MAX_MONTHS, email_ignores_period=True),
    ListApi(ListKind.NO_INTERCEPTION, "/v1/no_interceptions", "email_or_domain", _no_interception,
            ("GET", "POST", "DELETE")),
)


def _period(q: Mapping[str, str], spec: ListApi, value: str | None) -> tuple[datetime | None, datetime | None]:
    """The creation period: EngageLab's ``start_date``/``end_date`` (whole UTC days, inclusive) or
    our ``start_time``/``end_time`` (date-times, end exclusive); not both kinds at once."""
    start_raw, end_raw = text(q, "start_date"), text(q, "end_date")
    start_t, end_t = time_param(q, "start_time"), time_param(q, "end_time")
    if (start_raw or end_raw) and (start_t or end_t):
        raise ApiError(400, "start_date/end_date: give either start_date/end_date or start_time/end_time, not both")
    if start_t and end_t and end_t <= start_t:
        raise ApiError(400, "end_time: must be after start_time")
    if not (start_raw or end_raw):
        return start_t, end_t
    start_d = parse_day(start_raw, "start_date") if start_raw else None
    end_d = parse_day(end_raw, "end_date") if end_raw else None
    if start_d and end_d and end_d < start_d:
        raise ApiError(400, "end_date: must not be before start_date")
    if spec.email_ignores_period and value:
        return None, None
    if spec.max_months and start_d and end_d and end_d >= months_later(start_d, spec.max_months):
        raise ApiError(400, f"start_date/end_date: the period covers {(end_d - start_d).days + 1} days; "
                            f"{spec.path} covers at most {spec.max_months} months per query")
    start = datetime(start_d.year, start_d.month, start_d.day, tzinfo=UTC) if start_d else None
    end = datetime(end_d.year, end_d.month, end_d.day, tzinfo=UTC) + timedelta(days=1) if end_d else None
    return start, end


def _normalize(raw: str, kind: ListKind, field: str) -> str:
    value, err = normalize_value(raw, kind)
    if err:
        raise ApiError(400, f"{field}: {raw[:80]!r}: {err}")
    return value


async def _scope_api_user(request: web.Request, account_id: int, name: str | None) -> str:
    """``all`` or one API_USER of this account (anything else is a 400, never a wider scope)."""
    if name is None or name == ALL_API_USERS:
        return ALL_API_USERS
    user = await request.app[SERVICES_KEY].storage.accounts.get_api_user(name)
    if user is None or user.account_id != account_id:
        raise ApiError(400, f"api_user: {name[:80]!r} is not an API user of this account (or use 'all')")
    return name


async def list_entries(request: web.Request, spec: ListApi, q: Mapping[str, str]) -> dict[str, Any]:
    """A page of ``spec``'s list filtered by ``q`` (value, api_user, period, offset/limit), newest
    first (the only order storage keeps): result, count, total."""
    offset = integer(q, "offset", 0, 0, 1_000_000)
    limit = integer(q, "limit", MAX_LIMIT, 0, MAX_LIMIT)
    raw = text(q, spec.value_field)
    value = _normalize(raw, spec.kind, spec.value_field) if raw else None
    start, end = _period(q, spec, value)
    account_id = await scope_account(request, required=True)
    assert account_id is not None
    scope_raw = text(q, "api_user", max_len=128)
    scope = await _scope_api_user(request, account_id, scope_raw) if scope_raw else None
    result = await request.app[SERVICES_KEY].storage.suppressions.list(
        account_id, spec.kind, value=value, api_user=scope, start=start, end=end, offset=offset, limit=limit)
    return {"result": [spec.row(e) for e in result.items], "count": len(result.items), "total": result.total}


async def add_entries(request: web.Request, spec: ListApi, body: dict[str, Any]) -> int:
    """Add the entries of a POST body to ``spec``'s list ; how many were new."""
    account_id = await scope_account(request, required=True)
    assert account_id is not None
    values = [_normalize(v, spec.kind, spec.value_field) for v in body_values(body, spec.value_field)]
    api_user = await _scope_api_user(request, account_id, body_text(body, "api_user", max_len=128))
    reason = body_text(body, "reason", "", max_len=1000) or ""
    now = request.app[SERVICES_KEY].clock()
    expires = body_time(body, "expire_time") if spec.kind is ListKind.BLOCK else None
    if expires is not None and expires <= now:
        raise ApiError(400, "expire_time: must be in the future")
    code = body_int(body, "type", 0, 0, 3) if spec.kind is ListKind.UNSUBSCRIBE else None
    entries = [SuppressionEntry(account_id=account_id, kind=spec.kind, value=v, api_user=api_user,
                                created_at=now, expires_at=expires, reason_code=code, reason=reason)
               for v in dict.fromkeys(values)]
    return await _lists(request.app[SERVICES_KEY].storage).add(entries)


async def delete_entries(request: web.Request, spec: ListApi, q: Mapping[str, str]) -> dict[str, Any]:
    """Delete the values named in ``q`` from ``spec``'s list ."""
    raws = text_list(q, spec.value_field)
    if not raws:
        raise ApiError(400, f"{spec.value_field}: required (comma-separated values to delete)")
    values = [_normalize(v, spec.kind, spec.value_field) for v in raws]
    account_id = await scope_account(request, required=True)
    assert account_id is not None
    scope = None
    if spec.kind is not ListKind.COMPLAINT and text(q, "api_user", max_len=128):
        scope = await _scope_api_user(request, account_id, text(q, "api_user", max_len=128))
    n = await request.app[SERVICES_KEY].storage.suppressions.remove(account_id, spec.kind, values, scope)
    body: dict[str, Any] = {"count": n}
    if spec.kind is ListKind.COMPLAINT and n:
        body["warning"] = "removed from the complaint list: the next mail to these addresses will be sent"
    return body


UPLOAD_CHUNK = 5000
UPLOAD_MAX_ERRORS = 100
UPLOAD_MAX_LINE = 64 * 1024


async def upload_blocks(request: web.Request) -> dict[str, Any]:
    """``POST /v1/blocks/upload``: a CSV or one-value-per-line body (``value``, ``value,api_user`` or
    ``value,api_user,expire_time``,
    optional header, ``#`` comments), read line by line and written in chunks, so the body is never
    held in memory. Answers ``{"imported": n, "errors": [{"line": n, "message": ...}], "more_errors": n}``
    (the first 100 bad lines; ``more_errors`` counts the rest). ``api_user`` in the query is the
    scope of lines that name none; a line naming an API_USER of another account is a bad line."""
    if request.content_type in ("application/json", "multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(415, "send the file itself as the body (text/csv or text/plain), one value per line; "
                            "JSON entries go to POST /v1/blocks")
    account_id = await scope_account(request, required=True)
    assert account_id is not None
    services = request.app[SERVICES_KEY]
    default_scope = await _scope_api_user(request, account_id, text(request.query, "api_user", max_len=128))
    own = {u.name for u in await services.storage.accounts.list_api_users(account_id)} | {ALL_API_USERS}
    errors: list[dict[str, Any]] = []
    more = imported = 0
    chunk: list[SuppressionEntry] = []
    now = services.clock()

    def bad(line: int, message: str) -> None:
        nonlocal more
        if len(errors) < UPLOAD_MAX_ERRORS:
            errors.append({"line": line, "message": message})
        else:
            more += 1

    lineno = 0
    idle = services.handler_timeout
    # an empty body (no Content-Length, or 0) has no stream to read lines from: nothing to import
    while request.can_read_body:
        try:
            async with asyncio.timeout(idle):
                raw = await request.content.readuntil(b"\n", max_size=UPLOAD_MAX_LINE)  # b"" at the end
        except LineTooLong:
            raise ApiError(400, f"line {lineno + 1}: longer than {UPLOAD_MAX_LINE} bytes; {imported} entries "
                                "were imported before it") from None
        except TimeoutError:
            if chunk:
                imported += await _lists(services.storage).import_entries(chunk)
            raise ApiError(408, f"no data for {idle:g} s after line {lineno}; the {imported} entries before it "
                                "were imported (send the rest again: entries already there are kept once)") from None
        if not raw:
            break
        lineno += 1
        item = parse_line(lineno, raw, ListKind.BLOCK, account_id, default_scope, now)
        if item is None:
            continue
        if isinstance(item, str):
            bad(lineno, item.partition(": ")[2])
            continue
        if item.api_user not in own:
            bad(lineno, f"api_user {item.api_user[:80]!r} is not an API user of this account (or 'all')")
            continue
        chunk.append(item)
        if len(chunk) >= UPLOAD_CHUNK:
            imported += await _lists(services.storage).import_entries(chunk)
            chunk = []
    if chunk:
        imported += await _lists(services.storage).import_entries(chunk)
    return {"imported": imported, "errors": errors, "more_errors": more}
