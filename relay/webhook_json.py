"""What `mailrelay webhooks` and ``/v1/webhooks`` share: checking a new webhook's URL, events and
batch size, its secret, and the JSON shape of a webhook and of its attempts (one shape for the
CLI's ``--json`` and the API, like ``status_json.py``)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from relay.webhook_destination import DestinationRefused, check_host
from storage.webhooks import DEFAULT_EVENTS, SIGNATURES, Webhook, WebhookAttempt, WebhookEvent

MAX_URL = 2000
MAX_BATCH = 100
MIN_SECRET = 16
#: other names accepted for an event (EngageLab says ``report`` for a complaint)
ALIASES = {"complaint": WebhookEvent.REPORT, "soft-bounce": WebhookEvent.SOFT_BOUNCE,
           "softbounce": WebhookEvent.SOFT_BOUNCE, "deliver": WebhookEvent.DELIVERED}
EVENT_NAMES = ", ".join(e.value for e in WebhookEvent)


class WebhookInputError(ValueError):
    """A bad URL, event name, batch size or secret; the message says which and why."""


def check_url(url: str, allow_private: bool = False) -> str:
    """An http(s) URL with a host, no user:password, at most MAX_URL characters; unless
    ``allow_private`` (``[webhooks] allow_private_addresses``), not a loopback, private,
    link-local or multicast address literal nor localhost (``relay/webhook_destination.py``)."""
    url = url.strip()
    if not url or len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise WebhookInputError(f"url: an http:// or https:// URL of at most {MAX_URL} characters, no spaces")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed [IPv6 host
        raise WebhookInputError(f"url: {url[:80]!r} is not a valid URL") from None
    try:
        _ = parts.port  # a bad port ("x:99999") raises here, not at the first POST
    except ValueError:
        raise WebhookInputError(f"url: {url[:80]!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookInputError(f"url: {url[:80]!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookInputError("url: no user:password@ in the URL (the signature authenticates the POSTs)")
    if not allow_private:
        try:
            check_host(parts.hostname)
        except DestinationRefused as e:
            raise WebhookInputError(f"url: {e}: webhooks may only POST to public addresses "
                                    "(the operator's [webhooks] allow_private_addresses)") from None
    return url


def parse_events(raw: str | list[Any] | None) -> tuple[WebhookEvent, ...]:
    """Names separated by ``,`` or ``;`` (or a list of names); None or empty: every event but
    ``target`` (DEFAULT_EVENTS)."""
    if raw is None:
        return DEFAULT_EVENTS
    names = raw if isinstance(raw, list) else raw.replace(";", ",").split(",")
    out: list[WebhookEvent] = []
    for name in names:
        if not isinstance(name, str):
            raise WebhookInputError(f"events: expected event names, got {name!r}")
        key = name.strip().lower()
        if not key:
            continue
        event = ALIASES.get(key) or (WebhookEvent(key) if key in WebhookEvent._value2member_map_ else None)
        if event is None:
            raise WebhookInputError(f"events: unknown event {name.strip()[:40]!r} (known: {EVENT_NAMES})")
        if event not in out:
            out.append(event)
    return tuple(out) or DEFAULT_EVENTS


def check_batch(batch: int) -> int:
    if not 1 <= batch <= MAX_BATCH:
        raise WebhookInputError(f"batch: events per POST, 1 (one JSON object, EngageLab's form) to {MAX_BATCH}")
    return batch


def check_signature(given: str | None) -> str:
    mode = "body" if given is None else given.strip().lower()
    if mode not in SIGNATURES:
        raise WebhookInputError("signature: body (HMAC-SHA256 of the timestamp and the body, the default) or "
                                "engagelab (of the timestamp only, as EngageLab's documentation signs)")
    return mode


def new_secret(given: str | None = None) -> str:
    if given is None:
        return secrets.token_urlsafe(32)
    if len(given) < MIN_SECRET or any(c.isspace() or ord(c) < 32 for c in given):
        raise WebhookInputError(f"secret: at least {MIN_SECRET} characters, no spaces")
    return given


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def state(h: Webhook, now: datetime) -> str:
    if h.disabled_at is not None:
        return "disabled"
    if h.retry_at is not None and h.retry_at > now:
        return "backing off"
    return "failing" if h.failures else "active"


def webhook_json(h: Webhook, now: datetime) -> dict[str, Any]:
    return {
        "id": h.id, "account": h.account_name, "url": h.url, "events": [e.value for e in h.events],
        "batch": h.batch, "signature": h.signature, "state": state(h, now), "create_time": _iso(h.created_at),
        "pending": h.pending,
        "sent": h.sent, "failures": h.failures, "failing_since": _iso(h.failing_since),
        "last_error": h.last_error or None, "last_attempt_time": _iso(h.last_attempt_at),
        "last_success_time": _iso(h.last_success_at), "retry_time": _iso(h.retry_at),
        "disabled_time": _iso(h.disabled_at), "disabled_reason": h.disabled_reason or None,
    }


def attempt_json(a: WebhookAttempt) -> dict[str, Any]:
    return {"time": _iso(a.at), "events": a.events, "http_status": a.http_status, "error": a.error or None,
            "duration_ms": a.duration_ms, "ok": not a.error}
