"""Validation of query parameters and body fields: every value is checked for type, range and enum
before any storage call, and a bad one is a 400 naming the parameter (never a 500).

Dates: ``YYYY-MM-DD`` (a whole UTC day) or an ISO 8601 date-time (UTC when no offset is given).
Lists: separated by ``;`` in the query (EngageLab's separator, e.g. ``email_ids=a;b;c``) or by ``,``
(ours, kept working); a JSON array (or one string) in a body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, TypeVar

from relay.service.errors import ApiError, unstorable

E = TypeVar("E", bound=Enum)

MAX_LIST = 1000  # values per request (query list or body array)
MAX_TEXT = 320  # longest single text value (an address is at most 254)
_SEPARATORS = re.compile(r"[;,]")  # one character class: linear, no backtracking


def text(q: Mapping[str, str], name: str, *, max_len: int = MAX_TEXT) -> str | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise ApiError(400, f"{name}: longer than {max_len} characters")
    bad = unstorable(raw)
    if bad:
        raise ApiError(400, f"{name}: contains {bad}")
    return raw


def integer(q: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ApiError(400, f"{name}: expected an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: must be between {lo} and {hi}")
    return value


def text_list(q: Mapping[str, str], name: str) -> list[str]:
    raw = text(q, name, max_len=MAX_LIST * MAX_TEXT)
    if raw is None:
        return []
    items = [s.strip() for s in _SEPARATORS.split(raw) if s.strip()]
    if len(items) > MAX_LIST:
        raise ApiError(400, f"{name}: at most {MAX_LIST} values")
    for s in items:
        if len(s) > MAX_TEXT:
            raise ApiError(400, f"{name}: a value is longer than {MAX_TEXT} characters")
    return items


def enum_list(q: Mapping[str, str], name: str, enum: type[E]) -> list[E]:
    out = []
    for s in text_list(q, name):
        try:
            out.append(enum(int(s)))
        except ValueError:
            allowed = ", ".join(str(m.value) for m in enum)
            raise ApiError(400, f"{name}: unknown value {s[:40]!r} (one of {allowed})") from None
    return out


def parse_day(raw: str, name: str) -> date:
    try:
        if len(raw) != 10:
            raise ValueError
        day = date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{name}: expected a date as YYYY-MM-DD, got {raw[:40]!r}") from None
    if not 1970 <= day.year <= 9000:  # the same range as date-times (and never the end of the calendar)
        raise ApiError(400, f"{name}: year out of range (1970 to 9000)")
    return day


def months_later(d: date, months: int) -> date:
    """The same day ``months`` later (the month's last day when it has fewer days)."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    for day in (d.day, 30, 29, 28):
        try:
            return date(year, month, day)
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has 28 days")


def parse_time(raw: str, name: str) -> datetime:
    """A date-time, or a date meaning its midnight (UTC)."""
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            t = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            t = datetime.fromisoformat(raw.replace(" ", "T", 1))
    except ValueError:
        raise ApiError(400, f"{name}: expected YYYY-MM-DD or an ISO 8601 date-time, got {raw[:40]!r}") from None
    if not 1970 <= t.year <= 9000:
        raise ApiError(400, f"{name}: year out of range")
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def time_param(q: Mapping[str, str], name: str) -> datetime | None:
    raw = text(q, name)
    return None if raw is None else parse_time(raw, name)


def body_values(body: Mapping[str, Any], name: str) -> list[str]:
    """A body field holding one string or an array of strings (required, non-empty)."""
    value = body.get(name)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"{name}: required, a string or a non-empty array of strings")
    if len(value) > MAX_LIST:
        raise ApiError(400, f"{name}: at most {MAX_LIST} values per request")
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_TEXT for v in value):
        raise ApiError(400, f"{name}: every value must be a non-empty string of at most {MAX_TEXT} characters")
    return list(value)


def body_text(body: Mapping[str, Any], name: str, default: str | None = None, *, max_len: int = MAX_TEXT) -> str | None:
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise ApiError(400, f"{name}: expected a string of at most {max_len} characters")
    return value


def body_int(body: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(400, f"{name}: expected an integer between {lo} and {hi}")
    return value


def body_time(body: Mapping[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name}: expected a date or date-time string")
    return parse_time(value, name)
