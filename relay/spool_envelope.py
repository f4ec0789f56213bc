"""The envelope stored after a spooled message's content (and handed from an intake worker to the
owner): the whole :class:`storage.records.SubmissionRecord`, as compact JSON, so the status rows
can be rebuilt from the spool and delivery needs nothing else."""

from __future__ import annotations

import json
from typing import Any

from storage.codec import from_ms, message_params
from storage.records import (
    EmailType,
    MessageRecord,
    RecipientOutcome,
    Status,
    SubmissionRecord,
    SubStatus,
)


class EnvelopeError(ValueError):
    """Not an envelope this program wrote."""


def encode_envelope(rec: SubmissionRecord) -> bytes:
    return json.dumps(envelope_doc(rec), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def envelope_doc(rec: SubmissionRecord) -> dict[str, Any]:
    """The envelope as JSON-ready values (the spool trailer; the intake workers' hand-off): the
    message's fields as the status rows store them (one list of them: storage.codec), plus the
    per-message opt-outs and the recipients."""
    return {
        "v": 1,
        **message_params(rec.message),
        "opt_out": list(rec.message.opt_out),
        "recipients": [
            [r.recipient, int(r.status), int(r.sub_status) if r.sub_status else None, r.reason, r.rule]
            for r in rec.recipients
        ],
    }


def decode_envelope(raw: bytes) -> SubmissionRecord:
    return record_from_doc(json.loads(raw))


def record_from_doc(doc: dict[str, Any]) -> SubmissionRecord:
    if doc.get("v") != 1:
        raise EnvelopeError(f"unknown envelope version {doc.get('v')!r}")
    msg = MessageRecord(
        email_id=doc["email_id"],
        account_id=int(doc["account_id"]),
        api_user=doc["api_user"],
        sender=doc["sender"],
        subject=doc["subject"],
        label=doc["label"],
        email_type=EmailType(doc["email_type"]) if doc["email_type"] else None,
        size=int(doc["size"]),
        request_time=from_ms(doc["request_time"]),
        request_ip=doc["request_ip"],
        node=doc.get("node", ""),
        message_id=doc.get("message_id"),
        opt_out=tuple(doc.get("opt_out", ())),
        custom_args=doc.get("custom_args"),
    )
    rcpts = tuple(
        RecipientOutcome(
            recipient=r[0],
            status=Status(r[1]),
            sub_status=SubStatus(r[2]) if r[2] is not None else None,
            reason=r[3],
            rule=r[4],
        )
        for r in doc["recipients"]
    )
    return SubmissionRecord(message=msg, recipients=rcpts)
