"""The one vetted SQL builder: a StatusFilter -> the WHERE clause of ``status.search``/``status.count``.

Every fragment below is a constant; user values only ever travel as bound parameters (``:f_*``),
never in the SQL text. The set of distinct clauses is therefore finite (one per combination of
present filters), which is what lets ``Queries.render`` cache them.
"""

from __future__ import annotations

from typing import Any

from storage import codec
from storage.records import EmailType, StatsFilter, StatusFilter, StatusKey

# dialect -> (column, param, array element type) -> "column IN <list param>" fragment
_IN_LIST = {
    "sqlite": "{col} IN (SELECT value FROM json_each(:{param}))",
    "postgres": "{col} = ANY(:{param}::{typ}[])",
}


def _in_list(dialect: str, col: str, param: str, typ: str, values: list[Any], params: dict[str, Any]) -> str:
    """``col`` is one of ``values``. A single value is a plain equality: PostgreSQL (before 17) reads
    an index in order only for ``=``, not ``= ANY(array)``, and every page of the newest-first search
    would otherwise sort the whole window."""
    if len(values) == 1:
        params[param] = values[0]
        return f"{col} = :{param}"
    params[param] = values
    return _IN_LIST[dialect].format(col=col, param=param, typ=typ)


def search_where(flt: StatusFilter, dialect: str, after: StatusKey | None = None,
                 oldest_first: bool = False) -> tuple[str, dict[str, Any]]:
    """Build ``(where_sql, params)`` for a status search. Recipient and domain match lower-cased.

    ``after`` adds the keyset condition: only records after that one in the newest-first order
    (``oldest_first``: in the oldest-first order)."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    if flt.account_id is not None:
        parts.append("account_id = :f_account_id")
        params["f_account_id"] = flt.account_id
    if flt.recipient is not None:
        parts.append("recipient = :f_recipient")
        params["f_recipient"] = flt.recipient.strip().lower()
    ids: list[str] = []
    if flt.email_ids:
        ids.append(_in_list(dialect, "email_id", "f_email_ids", "text", list(flt.email_ids), params))
    if flt.recipient_ids:
        # the message ids narrow by index first; the concatenated key then keeps the exact pairs
        messages = list(dict.fromkeys(e for e, _ in flt.recipient_ids))
        keys = [f"{e}${r.strip().lower()}" for e, r in flt.recipient_ids]
        ids.append("(" + _in_list(dialect, "email_id", "f_rid_messages", "text", messages, params) + " AND "
                   + _in_list(dialect, "email_id || '$' || recipient", "f_rid_keys", "text", keys, params) + ")")
    if ids:
        parts.append(ids[0] if len(ids) == 1 else f"({ids[0]} OR {ids[1]})")
    if flt.api_user is not None:
        parts.append("api_user = :f_api_user")
        params["f_api_user"] = flt.api_user
    if flt.domain is not None:
        parts.append("domain = :f_domain")
        params["f_domain"] = flt.domain.strip().lower()
    if flt.label is not None:
        parts.append("label = :f_label")
        params["f_label"] = flt.label
    if flt.email_type is not None:
        parts.append("email_type = :f_email_type")
        params["f_email_type"] = str(EmailType(flt.email_type).value)
    if flt.statuses:
        parts.append(_in_list(dialect, "status", "f_statuses", "integer", [int(s) for s in flt.statuses], params))
    if flt.sub_statuses:
        parts.append(_in_list(dialect, "sub_status", "f_sub_statuses", "integer",
                              [int(s) for s in flt.sub_statuses], params))
    if flt.start is not None:
        parts.append("request_time >= :f_start")
        params["f_start"] = codec.to_ms(flt.start)
    if flt.end is not None:
        parts.append("request_time < :f_end")
        params["f_end"] = codec.to_ms(flt.end)
    if after is not None:
        parts.append("(request_time, email_id, recipient) > (:k_time, :k_email_id, :k_recipient)" if oldest_first
                     else "(request_time, email_id, recipient) < (:k_time, :k_email_id, :k_recipient)")
        params.update(k_time=codec.to_ms(after.request_time), k_email_id=after.email_id,
                      k_recipient=after.recipient)
    return (" AND ".join(parts) if parts else "1 = 1"), params


EPOCH_DAY = 719163  # date(1970, 1, 1).toordinal()


def stats_where(flt: StatsFilter, dialect: str) -> tuple[str, dict[str, Any]]:
    """``(where_sql, params)`` for ``stats.day`` over ``status_stats``: the hours of the filter's days
    (shifted by its time zone) and the optional dimension lists."""
    first_hour = (flt.start.toordinal() - EPOCH_DAY) * 24 - flt.tz_hours
    end_hour = (flt.end.toordinal() + 1 - EPOCH_DAY) * 24 - flt.tz_hours
    params: dict[str, Any] = {"f_account_id": flt.account_id, "f_start": first_hour, "f_end": end_hour,
                              "tz": flt.tz_hours}
    parts = ["account_id = :f_account_id", "hour >= :f_start", "hour < :f_end"]
    for col, values in (("api_user", flt.api_users), ("domain", flt.domains), ("label", flt.labels)):
        if values:
            parts.append(_in_list(dialect, col, f"f_{col}s", "text", list(values), params))
    return " AND ".join(parts), params
