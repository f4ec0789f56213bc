"""The body and headers of a webhook POST, in EngageLab's shape (README "Webhooks").

One event is one JSON object: ``server``, ``message_id``, ``from``, ``subject``, ``to``, ``itime``
(the event's time, epoch milliseconds), ``custom_args`` (the message's, ``{}`` for none and for
list events) and ``status`` {``message_status`` (the
event name), ``status_data`` {...}}; a ``target`` event (a recipient accepted) adds EngageLab's
``tos`` and ``email_ids`` (of its one recipient) and says ``successfully request``. Ours add
``event_id`` (the same on a resend: the key to drop duplicates) and ``webhook_id``. An endpoint
with ``batch`` > 1 gets a JSON array of such objects.

Signature: ``X-WebHook-Signature`` = hex HMAC-SHA256, keyed with the webhook's secret, of the
``X-WebHook-Timestamp`` value followed by the raw body. EngageLab's documentation signs the
timestamp only; signing the body too authenticates the event itself, not only the sender. A
webhook added with signature ``engagelab`` is signed EngageLab's way, for receivers written
against that documentation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from relay import custom_args
from relay.status_json import STATUS_DESC, SUB_STATUS_DESC, recipient_email_id
from storage import codec
from storage.records import Status, SubStatus
from storage.webhooks import OutboxEvent, WebhookEvent

APP_KEY = "email"  # EngageLab's fixed X-WebHook-AppKey


def event_json(e: OutboxEvent) -> dict[str, Any]:
    status = Status(e.status) if e.status is not None and e.status in Status._value2member_map_ else None
    sub = (SubStatus(e.sub_status) if e.sub_status is not None and e.sub_status in SubStatus._value2member_map_
           else None)
    data: dict[str, Any] = {
        "email_id": recipient_email_id(e.email_id, e.recipient) if e.email_id else "",
        "api_user": e.api_user,
        "message": e.reason,
        "status": int(status) if status is not None else None,
        "status_desc": STATUS_DESC[status] if status is not None else None,
        "sub_status": int(sub) if sub is not None else None,
        "sub_status_desc": SUB_STATUS_DESC[sub] if sub is not None else None,
        "label": e.label,
    }
    if e.event == WebhookEvent.TARGET:  # EngageLab's target: its message and its per-request lists (one recipient here)
        data.update(message=e.reason or "successfully request", tos=[e.recipient], email_ids=[data["email_id"]])
    if e.tracking is not None:  # open, click: who opened or clicked (a person or a privacy proxy), which link
        data.update(url=e.tracking.link, ip=e.tracking.ip, user_agent=e.tracking.user_agent,
                    machine=e.tracking.machine)
    return {
        "server": "email", "message_id": e.email_id, "from": e.sender, "subject": e.subject, "to": e.recipient,
        "itime": codec.to_ms(e.at), "custom_args": custom_args.decode(e.custom_args),
        "status": {"message_status": e.event, "status_data": data},
        "event_id": e.id, "webhook_id": e.webhook_id,
    }


def body(events: Sequence[OutboxEvent], batch: int) -> bytes:
    doc: Any = event_json(events[0]) if batch == 1 else [event_json(e) for e in events]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature(secret: str, timestamp: str, raw_body: bytes, mode: str = "body") -> str:
    """``mode`` 'body': of the timestamp followed by the body; 'engagelab': of the timestamp only."""
    signed = timestamp.encode("ascii") + (raw_body if mode != "engagelab" else b"")
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def headers(secret: str, timestamp: str, raw_body: bytes, webhook_id: int, mode: str = "body") -> dict[str, str]:
    return {"Content-Type": "application/json; charset=utf-8", "X-WebHook-Timestamp": timestamp,
            "X-WebHook-AppKey": APP_KEY, "X-WebHook-Signature": signature(secret, timestamp, raw_body, mode),
            "X-WebHook-Id": str(webhook_id)}
