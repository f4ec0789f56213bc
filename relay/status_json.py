"""The JSON shape of one status record, shared by `mailrelay status search --json` and the HTTP API.

One shape for both, so a customer's script reads the CLI output and the API response alike.
``log`` is the full send log (every line, oldest first); ``events`` repeats its feedback lines
(bounce, complaint, open, click, unsubscribe) for clients that only want those.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.records import LogEntry, LogKind, StatusRecord


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
    return {
        "email_id": r.email_id, "recipient": r.recipient, "status": int(r.status),
        "sub_status": int(r.sub_status) if r.sub_status is not None else None, "reason": r.reason,
        "api_user": r.api_user, "sender": r.sender, "domain": r.domain, "subject": r.subject,
        "label": r.label, "email_type": r.email_type.value if r.email_type else None,
        "request_time": _iso(r.request_time), "request_ip": r.request_ip,
        "send_time": _iso(r.send_time), "send_ip": r.send_ip, "mx_host": r.mx_host, "mx_ip": r.mx_ip,
        "updated_at": _iso(r.updated_at), "log": [log_json(e) for e in r.log],
        "events": [event_json(e) for e in r.log if e.kind is LogKind.FEEDBACK],
    }
