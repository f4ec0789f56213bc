"""The one place where records become SQL parameters and rows become records.

Both backends store times as integer epoch milliseconds (BIGINT); records carry timezone-aware
UTC ``datetime`` values. Enums are stored as their plain values (``Status`` as its int, ``ListKind``
as its text). Repositories never convert a time or an enum themselves; they call this module.

A naive ``datetime`` is refused: silently treating local time as UTC would shift every record.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.executor import Params, Row
from storage.records import (
    Account,
    AccountSettings,
    ApiUser,
    ApiUserSettings,
    DkimAlgorithm,
    DkimKey,
    EmailType,
    EventType,
    ExportStatus,
    ExportTask,
    Label,
    ListKind,
    LogEntry,
    LogKind,
    MessageRecord,
    RecipientEvent,
    RecipientOutcome,
    Status,
    StatusFilter,
    StatusRecord,
    SubStatus,
    SuppressionEntry,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: Stands for "no expiry" where a datetime is required (e.g. a bounce entry without expiry).
NEVER = datetime(9999, 12, 31, tzinfo=UTC)
#: Bounds for "no time filter" on integer-ms columns (SQLite and PostgreSQL BIGINT both fit).
MIN_MS = -(2**62)
MAX_MS = 2**62


def to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: storage needs timezone-aware UTC times")
    return (dt - EPOCH) // _MS


def opt_ms(dt: datetime | None) -> int | None:
    return None if dt is None else to_ms(dt)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


# ---------------------------------------------------------------- accounts


def account_from_row(row: Row) -> Account:
    return Account(id=int(row["id"]), name=row["name"], created_at=from_ms(row["created_at"]))


def label_from_row(row: Row) -> Label:
    return Label(label_id=int(row["label_id"]), account_id=int(row["account_id"]), name=row["name"],
                 created_at=from_ms(row["created_at"]), updated_at=from_ms(row["updated_at"]))


def api_user_from_row(row: Row) -> ApiUser:
    return ApiUser(
        name=row["name"],
        account_id=int(row["account_id"]),
        account_name=row["account_name"],
        key_hash=row["key_hash"],
        created_at=from_ms(row["created_at"]),
        revoked_at=opt_dt(row["revoked_at"]),
    )


# ---------------------------------------------------------------- suppressions


def suppression_params(e: SuppressionEntry) -> dict[str, Any]:
    return {
        "account_id": e.account_id,
        "kind": str(ListKind(e.kind).value),
        "value": e.value.strip().lower(),
        "api_user": e.api_user,
        "created_at": to_ms(e.created_at),
        "expires_at": opt_ms(e.expires_at),
        "hit_count": int(e.hit_count),
        "reason_code": None if e.reason_code is None else int(e.reason_code),
        "reason": e.reason,
    }


def suppression_from_row(row: Row) -> SuppressionEntry:
    return SuppressionEntry(
        account_id=int(row["account_id"]),
        kind=ListKind(row["kind"]),
        value=row["value"],
        api_user=row["api_user"],
        created_at=from_ms(row["created_at"]),
        expires_at=opt_dt(row["expires_at"]),
        hit_count=int(row["hit_count"]),
        reason_code=row["reason_code"],
        reason=row["reason"],
    )


# ---------------------------------------------------------------- statuses


def message_params(m: MessageRecord) -> dict[str, Any]:
    return {
        "email_id": m.email_id,
        "account_id": m.account_id,
        "api_user": m.api_user,
        "sender": m.sender,
        "subject": m.subject,
        "label": m.label,
        "email_type": None if m.email_type is None else str(EmailType(m.email_type).value),
        "size": int(m.size),
        "request_time": to_ms(m.request_time),
        "request_ip": m.request_ip,
        "node": m.node,
        "message_id": m.message_id,
        "custom_args": m.custom_args,
    }


def recipient_params(m: MessageRecord, r: RecipientOutcome, recipient: str, now: datetime) -> dict[str, Any]:
    return {
        "email_id": m.email_id,
        "recipient": recipient,
        "account_id": m.account_id,
        "api_user": m.api_user,
        "sender": m.sender,
        "domain": domain_of(recipient),
        "subject": m.subject,
        "label": m.label,
        "email_type": None if m.email_type is None else str(EmailType(m.email_type).value),
        "request_time": to_ms(m.request_time),
        "request_ip": m.request_ip,
        "status": int(r.status),
        "sub_status": None if r.sub_status is None else int(r.sub_status),
        "reason": r.reason,
        "updated_at": to_ms(now),
    }


def log_params(email_id: str, recipient: str, e: LogEntry) -> dict[str, Any]:
    return {
        "email_id": email_id,
        "recipient": recipient,
        "at": to_ms(e.at),
        "kind": str(LogKind(e.kind).value),
        "code": e.code,
        "enhanced": e.enhanced,
        "text": e.text,
        "mx_host": e.mx_host,
        "mx_ip": e.mx_ip,
        "duration_ms": e.duration_ms,
        "rule": e.rule,
        "event": event_json(e.event),
    }


def event_json(ev: RecipientEvent | None) -> str | None:
    if ev is None:
        return None
    return json.dumps({"type": ev.type.value, "ip": ev.ip, "user_agent": ev.user_agent, "link": ev.link,
                       "reason_type": ev.reason_type, "machine": ev.machine}, separators=(",", ":"))


def event_from_json(text: str | None) -> RecipientEvent | None:
    if not text:
        return None
    d = json.loads(text)
    return RecipientEvent(EventType(d["type"]), d.get("ip", ""), d.get("user_agent", ""), d.get("link"),
                          d.get("reason_type"), bool(d.get("machine")))


def settings_params(account_id: int, st: AccountSettings, at: datetime) -> Params:
    return {"account_id": account_id, "list_unsubscribe": int(st.list_unsubscribe),
            "track_opens": int(st.track_opens), "track_clicks": int(st.track_clicks), "updated_at": to_ms(at)}


def settings_from_row(row: Row) -> AccountSettings:
    return AccountSettings(bool(row["list_unsubscribe"]), bool(row["track_opens"]), bool(row["track_clicks"]))


def _opt_int(v: bool | None) -> int | None:
    return None if v is None else int(v)


def _opt_bool(v: Any) -> bool | None:
    return None if v is None else bool(v)


def user_settings_params(api_user: str, st: ApiUserSettings, at: datetime) -> Params:
    return {"api_user": api_user, "list_unsubscribe": _opt_int(st.list_unsubscribe),
            "track_opens": _opt_int(st.track_opens), "track_clicks": _opt_int(st.track_clicks),
            "updated_at": to_ms(at)}


def user_settings_from_row(row: Row) -> ApiUserSettings:
    return ApiUserSettings(_opt_bool(row["list_unsubscribe"]), _opt_bool(row["track_opens"]),
                           _opt_bool(row["track_clicks"]))


def log_from_row(row: Row) -> LogEntry:
    return LogEntry(
        at=from_ms(row["at"]),
        kind=LogKind(row["kind"]),
        text=row["text"],
        code=row["code"],
        enhanced=row["enhanced"],
        mx_host=row["mx_host"],
        mx_ip=row["mx_ip"],
        duration_ms=row["duration_ms"],
        rule=row["rule"],
        event=event_from_json(row["event"]),
    )


def status_update_params(
    email_id: str,
    recipient: str,
    status: Status,
    sub_status: SubStatus | None,
    reason: str,
    now: datetime,
    log: LogEntry | None,
    send_ip: str | None,
) -> Params:
    attempt = log is not None and log.kind == LogKind.ATTEMPT
    return {
        "email_id": email_id,
        "recipient": recipient,
        "status": int(status),
        "sub_status": None if sub_status is None else int(sub_status),
        "reason": reason,
        "updated_at": to_ms(now),
        "send_time": to_ms(log.at) if attempt and log is not None else None,
        "send_ip": send_ip,
        "mx_host": log.mx_host if attempt and log is not None else None,
        "mx_ip": log.mx_ip if attempt and log is not None else None,
    }


def status_from_row(row: Row, log: tuple[LogEntry, ...] = ()) -> StatusRecord:
    et = row["email_type"]
    sub = row["sub_status"]
    return StatusRecord(
        email_id=row["email_id"],
        account_id=int(row["account_id"]),
        api_user=row["api_user"],
        sender=row["sender"],
        recipient=row["recipient"],
        domain=row["domain"],
        subject=row["subject"],
        label=row["label"],
        email_type=None if et is None else EmailType(et),
        request_time=from_ms(row["request_time"]),
        request_ip=row["request_ip"],
        status=Status(row["status"]),
        sub_status=None if sub is None else SubStatus(sub),
        reason=row["reason"],
        updated_at=from_ms(row["updated_at"]),
        send_time=opt_dt(row["send_time"]),
        send_ip=row["send_ip"],
        mx_host=row["mx_host"],
        mx_ip=row["mx_ip"],
        log=log,
    )


# ---------------------------------------------------------------- exports


def filter_to_json(f: StatusFilter) -> str:
    return json.dumps({
        "account_id": f.account_id, "recipient": f.recipient, "email_ids": list(f.email_ids),
        "recipient_ids": [list(p) for p in f.recipient_ids],
        "api_user": f.api_user, "domain": f.domain, "label": f.label,
        "email_type": None if f.email_type is None else str(EmailType(f.email_type).value),
        "statuses": [int(s) for s in f.statuses], "sub_statuses": [int(s) for s in f.sub_statuses],
        "start": opt_ms(f.start), "end": opt_ms(f.end),
    }, sort_keys=True)


def filter_from_json(text: str) -> StatusFilter:
    d = json.loads(text)
    return StatusFilter(
        account_id=d.get("account_id"), recipient=d.get("recipient"), email_ids=tuple(d.get("email_ids") or ()),
        recipient_ids=tuple((e, r) for e, r in d.get("recipient_ids") or ()),
        api_user=d.get("api_user"), domain=d.get("domain"), label=d.get("label"),
        email_type=EmailType(d["email_type"]) if d.get("email_type") else None,
        statuses=tuple(Status(s) for s in d.get("statuses") or ()),
        sub_statuses=tuple(SubStatus(s) for s in d.get("sub_statuses") or ()),
        start=opt_dt(d.get("start")), end=opt_dt(d.get("end")),
    )


def export_from_row(row: Row) -> ExportTask:
    return ExportTask(
        id=row["id"],
        account_id=int(row["account_id"]),
        kind=row["kind"],
        filter=filter_from_json(row["filter"]),
        status=ExportStatus(row["status"]),
        created_at=from_ms(row["created_at"]),
        started_at=opt_dt(row["started_at"]),
        finished_at=opt_dt(row["finished_at"]),
        rows_done=int(row["rows_done"]),
        rows_total=None if row["rows_total"] is None else int(row["rows_total"]),
        file_size=None if row["file_size"] is None else int(row["file_size"]),
        attempts=int(row["attempts"]),
        node=row["node"],
        error=row["error"],
        expired_at=opt_dt(row["expired_at"]),
    )


def dkim_params(key: DkimKey) -> Params:
    return {
        "domain": key.domain,
        "selector": key.selector,
        "algorithm": key.algorithm.value,
        "private_key": key.private_key,
        "public_key": key.public_key,
        "account_id": key.account_id,
        "created_at": to_ms(key.created_at),
    }


def dkim_from_row(row: Row) -> DkimKey:
    return DkimKey(
        domain=row["domain"],
        selector=row["selector"],
        algorithm=DkimAlgorithm(row["algorithm"]),
        private_key=row["private_key"],
        public_key=row["public_key"],
        created_at=from_ms(row["created_at"]),
        account_id=None if row["account_id"] is None else int(row["account_id"]),
        account_name=row["account_name"],
    )
