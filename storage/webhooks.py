"""Event webhooks: an account's endpoints, the durable outbox of their events, their attempts.

Events enter the outbox only through the database triggers of migrations 0012, 0013 and 0017 (in
the transaction of the change they report); this repository reads, claims and settles them. Claims are leases
(``claimed_until``): an event whose node died is claimed again once its lease ran out, so every
event is sent at least once; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` gives each event to one node.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from storage import codec
from storage.executor import Executor, Op, Row
from storage.records import RecipientEvent


class WebhookEvent(StrEnum):
    """Event names, as EngageLab's ``message_status`` spells them (``report``: a complaint;
    ``target``: a recipient accepted, migration 0017)."""

    TARGET = "target"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    SOFT_BOUNCE = "soft_bounce"
    INVALID = "invalid"
    REPORT = "report"
    UNSUBSCRIBE = "unsubscribe"
    OPEN = "open"
    CLICK = "click"


#: what a webhook added without a list of events wants: every event but ``target``, which is asked for
#: by name (one more event per accepted recipient: webhooks made before it existed keep their volume)
DEFAULT_EVENTS: tuple[WebhookEvent, ...] = tuple(e for e in WebhookEvent if e is not WebhookEvent.TARGET)


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    account_id: int
    account_name: str
    url: str
    events: tuple[WebhookEvent, ...]
    secret: str
    batch: int
    created_at: datetime
    retry_at: datetime | None
    failures: int
    failing_since: datetime | None
    last_error: str
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    sent: int
    disabled_at: datetime | None
    disabled_reason: str
    pending: int
    signature: str = "body"  # SIGNATURES: what X-WebHook-Signature signs


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One claimed event. ``email_id`` is '' for list events (complaint, unsubscribe); the message
    fields (api_user, sender, subject, label, custom_args) are empty when the message has no row. ``tracking``:
    the ip, user agent and link of an open or click (None for other events)."""

    id: int
    webhook_id: int
    event: str
    email_id: str
    recipient: str
    status: int | None
    sub_status: int | None
    reason: str
    at: datetime
    attempts: int
    api_user: str = ""
    sender: str = ""
    subject: str = ""
    label: str | None = None
    tracking: RecipientEvent | None = None
    custom_args: str | None = None  # the message's (JSON text, migration 0016); None: none


@dataclass(frozen=True, slots=True)
class Delivered:
    """One acknowledged POST: its endpoint, its events, when, the answer's status and duration."""

    webhook_id: int
    ids: tuple[int, ...]
    at: datetime
    http_status: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    id: int
    webhook_id: int
    at: datetime
    events: int
    http_status: int | None
    error: str
    duration_ms: int


#: attempts kept per endpoint
KEEP_ATTEMPTS = 100
#: what X-WebHook-Signature signs: the timestamp and the body (ours), or the timestamp only (EngageLab's)
SIGNATURES = ("body", "engagelab")


def _span(d: timedelta) -> str:
    """``1d``, ``6h``, ``0.5s``: a duration as the configuration writes it."""
    secs = d.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size and secs % size == 0:
            return f"{int(secs // size)}{unit}"
    return f"{secs:g}s"


def _events(text: str) -> tuple[WebhookEvent, ...]:
    return tuple(WebhookEvent(e) for e in text.strip(",").split(",") if e)


def _webhook(r: Row) -> Webhook:
    return Webhook(
        id=int(r["id"]), account_id=int(r["account_id"]), account_name=r["account_name"] or "", url=r["url"],
        events=_events(r["events"]), secret=r["secret"], batch=int(r["batch"]),
        created_at=codec.from_ms(r["created_at"]), retry_at=codec.opt_dt(r["retry_at"]),
        failures=int(r["failures"]), failing_since=codec.opt_dt(r["failing_since"]), last_error=r["last_error"],
        last_attempt_at=codec.opt_dt(r["last_attempt_at"]), last_success_at=codec.opt_dt(r["last_success_at"]),
        sent=int(r["sent"]), disabled_at=codec.opt_dt(r["disabled_at"]), disabled_reason=r["disabled_reason"],
        pending=int(r["pending"]), signature=r["signature"],
    )


def _attempt(r: Row) -> WebhookAttempt:
    return WebhookAttempt(id=int(r["id"]), webhook_id=int(r["webhook_id"]), at=codec.from_ms(r["at"]),
                          events=int(r["events"]), http_status=r["http_status"], error=r["error"],
                          duration_ms=int(r["duration_ms"]))


class SqlWebhookRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    # ------------------------------------------------------------ endpoints

    async def add(self, account_id: int, url: str, events: Sequence[WebhookEvent], secret: str, batch: int,
                  at: datetime, signature: str = "body") -> Webhook:
        assert signature in SIGNATURES, signature
        framed = "," + ",".join(WebhookEvent(e).value for e in events) + ","
        new_id = await self._ex.fetchval("webhook.insert", {
            "account_id": account_id, "url": url, "events": framed, "secret": secret, "batch": batch,
            "created_at": codec.to_ms(at), "signature": signature})
        hook = await self.get(int(new_id))
        assert hook is not None
        return hook

    async def get(self, webhook_id: int, account_id: int | None = None) -> Webhook | None:
        """``account_id`` given: None unless the webhook belongs to that account."""
        row = await self._ex.fetchrow("webhook.get", {"id": webhook_id})
        if row is None:
            return None
        hook = _webhook(row)
        return hook if account_id is None or hook.account_id == account_id else None

    async def list(self, account_id: int | None = None) -> builtins.list[Webhook]:
        return [_webhook(r) for r in await self._ex.fetch("webhook.list", {"account_id": account_id})]

    async def remove(self, webhook_id: int) -> bool:
        """Delete the endpoint with its pending events and attempts."""
        p = {"id": webhook_id}
        counts = await self._ex.write_batch([Op("webhook.delete", [p]), Op("webhook.delete_outbox", [p]),
                                             Op("webhook.delete_attempts", [p])])
        return counts[0] > 0

    async def enable(self, webhook_id: int) -> bool:
        return await self._ex.execute("webhook.enable", {"id": webhook_id}) > 0

    async def attempts(self, webhook_id: int, limit: int = 20) -> builtins.list[WebhookAttempt]:
        """The endpoint's last attempts, newest first."""
        return [_attempt(r) for r in await self._ex.fetch("webhook.attempts", {"id": webhook_id, "limit": limit})]

    # ------------------------------------------------------------ the outbox

    async def claim(self, node: str, now: datetime, lease: timedelta, limit: int) -> builtins.list[OutboxEvent]:
        """Take up to ``limit`` due events for ``node`` until ``now + lease``, oldest first, at most one
        per (endpoint, recipient) at a time."""
        params = {"node": node, "now": codec.to_ms(now), "until": codec.to_ms(now + lease)}
        rows: list[Row] = []
        # endpoint by endpoint: a disabled or backing-off endpoint's backlog is never walked
        for hook in await self._ex.fetch("webhook.due_hooks", {"now": params["now"]}):
            if len(rows) >= limit:
                break
            rows += await self._ex.fetch("webhook.claim", {**params, "webhook_id": int(hook["id"]),
                                                           "limit": limit - len(rows)})
        if not rows:
            return []
        ids = [int(r["id"]) for r in rows]
        details = {int(d["id"]): d for d in await self._ex.fetch("webhook.event_details", {"ids": ids})}
        out = []
        for r in sorted(rows, key=lambda r: int(r["id"])):
            d = details.get(int(r["id"]))
            out.append(OutboxEvent(
                id=int(r["id"]), webhook_id=int(r["webhook_id"]), event=r["event"], email_id=r["email_id"],
                recipient=r["recipient"], status=r["status"], sub_status=r["sub_status"], reason=r["reason"],
                at=codec.from_ms(r["at"]), attempts=int(r["attempts"]),
                api_user=d["api_user"] if d else "", sender=d["sender"] if d else "",
                subject=d["subject"] if d else "", label=d["label"] if d else None,
                tracking=codec.event_from_json(d["tracking"]) if d else None,
                custom_args=d["custom_args"] if d else None))
        return out

    async def succeeded(self, posts: Sequence[Delivered]) -> None:
        """Endpoints acknowledged these POSTs: their events leave the outbox, their attempts are
        recorded, all in one transaction (a sender settles the POSTs that finished together at once)."""
        if not posts:
            return
        per_hook: dict[int, tuple[int, datetime]] = {}
        for d in posts:
            n, at = per_hook.get(d.webhook_id, (0, d.at))
            per_hook[d.webhook_id] = (n + len(d.ids), max(at, d.at))
        await self._ex.write_batch([
            Op("webhook.ack", [{"ids": [i for d in posts for i in d.ids]}]),
            Op("webhook.succeeded", [{"id": h, "now": codec.to_ms(at), "n": n}
                                     for h, (n, at) in sorted(per_hook.items())]),
            Op("webhook.attempt_insert", [{"id": d.webhook_id, "at": codec.to_ms(d.at), "events": len(d.ids),
                                           "http_status": d.http_status, "error": "",
                                           "duration_ms": d.duration_ms} for d in posts]),
            Op("webhook.attempt_prune", [{"id": h, "keep": KEEP_ATTEMPTS} for h in sorted(per_hook)]),
        ])

    async def failed(self, webhook_id: int, ids: Sequence[int], now: datetime, http_status: int | None, error: str,
                     duration_ms: int, retry_at: datetime, disable_after: timedelta) -> None:
        """The POST failed: the events are released for a retry at ``retry_at``; an endpoint failing
        for ``disable_after`` or longer is disabled (its events are kept)."""
        reason = f"every POST failed for {_span(disable_after)} or longer; last error: {error}"[:1000]
        await self._ex.write_batch([
            Op("webhook.release", [{"ids": list(ids)}]),
            Op("webhook.failed", [{"id": webhook_id, "now": codec.to_ms(now), "error": error[:1000],
                                   "retry_at": codec.to_ms(retry_at),
                                   "disable_before": codec.to_ms(now - disable_after), "reason": reason}]),
            *self._attempt_ops(webhook_id, now, len(ids), http_status, error, duration_ms),
        ])

    @staticmethod
    def _attempt_ops(webhook_id: int, at: datetime, events: int, http_status: int | None, error: str,
                     duration_ms: int) -> builtins.list[Op]:
        return [Op("webhook.attempt_insert", [{"id": webhook_id, "at": codec.to_ms(at), "events": events,
                                               "http_status": http_status, "error": error[:1000],
                                               "duration_ms": duration_ms}]),
                Op("webhook.attempt_prune", [{"id": webhook_id, "keep": KEEP_ATTEMPTS}])]

    async def release(self, ids: Sequence[int]) -> None:
        """Give claimed events back unsent (due again at once; no attempt is counted)."""
        if ids:
            await self._ex.execute("webhook.unclaim", {"ids": list(ids)})

    async def release_node(self, node: str) -> int:
        """Start-up: events ``node`` had claimed when it stopped are due again at once."""
        return await self._ex.execute("webhook.release_node", {"node": node})

    async def outbox_size(self) -> int:
        return int(await self._ex.fetchval("webhook.outbox_count"))
