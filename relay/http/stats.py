"""``GET /v1/stats_day``: EngageLab's daily delivery statistics, read from the counters the storage
keeps as statuses change (``status_stats``), never from the recipients.

Parameters: ``start_date``/``end_date`` (required, ``yyyy-MM-dd``, inclusive, at most 3 months),
``time_zone`` (whole hours from UTC, ``+8``, ``-5``, ``+08:00``; default 0 = UTC), ``api_users``,
``label_ids``, ``domain_names`` (``;`` or ``,`` lists), ``aggregate_by`` (1: one row per day over
every API_USER, domain and label). A row is one day (of the request time), API_USER, receiving
domain and label: ``targets`` (requests), ``sent`` (reached the receiving server: delivered or
soft bounce), ``delivered``, ``soft_bounce``, ``invalid``, ``sending`` (not final yet), and
``sub_status`` (counts per sub-status code). Recipients are counted under the day they were
requested, in their current status.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from aiohttp import web

from relay.http.auth import SERVICES_KEY, scope_account
from relay.http.envelope import ApiError, page
from relay.http.labels import label_filter
from relay.http.params import integer, months_later, parse_day, text, text_list
from storage.records import StatsCount, StatsFilter, Status

MAX_MONTHS = 3
_TZ = re.compile(r"^([+-]?)(\d{1,2})(?::00)?$")


def _time_zone(raw: str | None) -> int:
    if raw is None:
        return 0
    m = _TZ.match(raw.strip())
    hours = (-1 if m.group(1) == "-" else 1) * int(m.group(2)) if m else None
    if hours is None or not -12 <= hours <= 14:
        raise ApiError(400, "time_zone: whole hours from UTC, -12 to +14 (e.g. +8, -5, +08:00)")
    return hours


def _row(day: date, counts: list[StatsCount], api_user: str | None, domain: str | None,
         label: str | None, label_id: int | None) -> dict[str, Any]:
    by_status = {s: 0 for s in Status}
    subs: dict[str, int] = {}
    for c in counts:
        by_status[c.status] += c.count
        if c.sub_status is not None:
            subs[str(int(c.sub_status))] = subs.get(str(int(c.sub_status)), 0) + c.count
    return {
        "send_date": day.isoformat(), "api_user": api_user, "domain": domain, "label_id": label_id,
        "label_name": label or None,
        "targets": sum(by_status.values()), "sent": by_status[Status.DELIVERED] + by_status[Status.SOFT_BOUNCE],
        "delivered": by_status[Status.DELIVERED], "soft_bounce": by_status[Status.SOFT_BOUNCE],
        "invalid": by_status[Status.INVALID], "sending": by_status[Status.SENDING],
        "sub_status": dict(sorted(subs.items())),
    }


async def stats_day(request: web.Request) -> web.Response:
    q = request.query
    start_raw, end_raw = text(q, "start_date"), text(q, "end_date")
    if not (start_raw and end_raw):
        raise ApiError(400, "start_date and end_date: required (yyyy-MM-dd, inclusive)")
    start, end = parse_day(start_raw, "start_date"), parse_day(end_raw, "end_date")
    if end < start:
        raise ApiError(400, "end_date: must not be before start_date")
    if end >= months_later(start, MAX_MONTHS):
        raise ApiError(400, f"start_date/end_date: one query covers at most {MAX_MONTHS} months")
    tz = _time_zone(text(q, "time_zone"))
    aggregate = integer(q, "aggregate_by", 0, 0, 1) == 1
    account_id = await scope_account(request, required=True)
    assert account_id is not None
    labels = [await label_filter(request, account_id, v) or v for v in text_list(q, "label_ids")]
    storage = request.app[SERVICES_KEY].storage
    counts = await storage.stats.by_day(StatsFilter(
        account_id, start, end, tz, api_users=tuple(text_list(q, "api_users")),
        domains=tuple(d.lower() for d in text_list(q, "domain_names")), labels=tuple(labels)))
    groups: dict[tuple[Any, ...], list[StatsCount]] = {}
    for c in counts:
        key: tuple[Any, ...] = (c.day,) if aggregate else (c.day, c.api_user, c.domain, c.label)
        groups.setdefault(key, []).append(c)
    label_ids: dict[str, int | None] = {}
    rows = []
    for group_key, group in groups.items():
        if aggregate:
            rows.append(_row(group_key[0], group, None, None, None, None))
            continue
        day, api_user, domain, label = group_key
        if label and label not in label_ids:
            found = await storage.labels.get_by_name(account_id, label)
            label_ids[label] = found.label_id if found else None
        rows.append(_row(day, group, api_user, domain, label, label_ids.get(label)))
    return page(rows, len(rows))
