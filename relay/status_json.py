"""The JSON shape of one status record, shared by `mailrelay status search --json` and the HTTP API.

One shape for both, so a customer's script reads the CLI output and the API response alike.

EngageLab's field names come first: ``email``, ``email_id`` (per recipient, see below),
``api_user``, ``status`` / ``status_desc``, ``sub_status`` / ``sub_status_desc``, ``request_time``,
``update_time``, ``response_message``. Ours follow where they add something: ``message_id``,
``sender``, ``domain``, ``subject``, ``label``, ``email_type``, ``request_ip``, ``send_time``,
``send_ip``, ``mx_host``, ``mx_ip``, ``reason``, ``log`` (the full send log, oldest first) and
``events`` (its feedback lines). ``recipient`` and ``updated_at`` (the names before EngageLab's)
are still answered in this release and will be removed in the next one.

Ids: mailrelay keeps one id per message (``message_id``, the id of ``250 Ok: queued as``);
EngageLab has one per recipient. A record's ``email_id`` is ``MESSAGE_ID$recipient`` (the form
of EngageLab's webhook examples); filters accept both forms (:func:`split_email_id`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.records import LogEntry, LogKind, Status, StatusRecord, SubStatus

RECIPIENT_ID_SEPARATOR = "$"  # never in a message id (Crockford base32), so the first one splits

STATUS_DESC = {Status.SENDING: "Sending", Status.DELIVERED: "Delivered", Status.SOFT_BOUNCE: "Soft bounce",
               Status.INVALID: "Invalid email"}
SUB_STATUS_DESC = {
    SubStatus.BLACKLIST: "Invalid email: blacklist", SubStatus.UNSUBSCRIBE: "Invalid email: unsubscribe",
    SubStatus.SERVER_ERROR: "Invalid email: server error", SubStatus.FORMAT_ERROR: "Invalid email: format error",
    SubStatus.IP_REJECTION: "Invalid email: IP rejection", SubStatus.NOT_EXIST: "Invalid email: not exist",
    SubStatus.JUNK_MAIL: "Invalid email: junk mail", SubStatus.REJECTED: "Invalid email: rejected",
    SubStatus.OTHERS: "Invalid email: others",
    SubStatus.SB_SERVER_ERROR: "Soft bounce: server error", SubStatus.SB_IP_REJECTION: "Soft bounce: IP rejection",
    SubStatus.SB_NOT_EXIST: "Soft bounce: not exist", SubStatus.SB_SPAM_REJECTED: "Soft bounce: spam rejected",
    SubStatus.SB_REJECTED: "Soft bounce: rejected", SubStatus.SB_OTHERS: "Soft bounce: others",
}


def recipient_email_id(email_id: str, recipient: str) -> str:
    """The per-recipient id of one record: ``MESSAGE_ID$recipient``."""
    return f"{email_id}{RECIPIENT_ID_SEPARATOR}{recipient}"


def split_email_id(value: str) -> tuple[str, str | None]:
    """``MESSAGE_ID`` -> (id, None); ``MESSAGE_ID$recipient`` -> (id, lower-cased recipient)."""
    email_id, sep, recipient = value.partition(RECIPIENT_ID_SEPARATOR)
    return (email_id, recipient.strip().lower()) if sep else (email_id, None)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def log_json(e: LogEntry) -> dict[str, Any]:
    return {"time": _iso(e.at), "kind": e.kind.value, "code": e.code, "enhanced": e.enhanced,
            "text": e.text, "mx_host": e.mx_host, "mx_ip": e.mx_ip, "duration_ms": e.duration_ms,
            "rule": e.rule}


def event_json(e: LogEntry) -> dict[str, Any]:
    """A feedback line with what the recipient did (unsubscribe, open, click; null for a bounce or
    complaint): ``type``, ``ip``, ``user_agent``, ``link``, ``reason_type``, ``machine``."""
    ev = e.event
    return {**log_json(e), "type": ev.type.value if ev else None, "ip": ev.ip if ev else None,
            "user_agent": ev.user_agent if ev else None, "link": ev.link if ev else None,
            "reason_type": ev.reason_type if ev else None, "machine": ev.machine if ev else None}


def record_json(r: StatusRecord) -> dict[str, Any]:
    sub = r.sub_status
    return {
        "email": r.recipient, "email_id": recipient_email_id(r.email_id, r.recipient), "api_user": r.api_user,
        "status": int(r.status), "status_desc": STATUS_DESC[r.status],
        "sub_status": int(sub) if sub is not None else None,
        "sub_status_desc": SUB_STATUS_DESC[sub] if sub is not None else None,
        "request_time": _iso(r.request_time), "update_time": _iso(r.updated_at), "response_message": r.reason,
        "message_id": r.email_id, "reason": r.reason, "sender": r.sender, "domain": r.domain,
        "subject": r.subject, "label": r.label, "email_type": r.email_type.value if r.email_type else None,
        "request_ip": r.request_ip, "send_time": _iso(r.send_time), "send_ip": r.send_ip, "mx_host": r.mx_host,
        "mx_ip": r.mx_ip, "log": [log_json(e) for e in r.log],
        "events": [event_json(e) for e in r.log if e.kind is LogKind.FEEDBACK],
        "recipient": r.recipient, "updated_at": _iso(r.updated_at),  # deprecated names, for one release
    }
