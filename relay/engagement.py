"""What recipients do with our mail: unsubscribes (list entry + event) and opens/clicks (events).

Shared by the recipient-facing web listener (relay/web) and the unsubscribe mailbox on the
feedback listener (wired in relay/app.py). Events go on the recipient's send log as ``feedback``
lines carrying a :class:`RecipientEvent`; they are queued and written in batches by one
background task (:meth:`Engagement.run`), so a burst of clicks costs a few transactions and never
waits on, or holds up, the database work of SMTP intake and delivery. The unsubscribe list entry
itself is written at once: the next RCPT for that recipient must already be refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from relay import tokens
from relay.verp import recipient_hash
from storage.protocols import Storage
from storage.records import (
    ALL_API_USERS,
    EventType,
    ListKind,
    LogEntry,
    LogKind,
    RecipientEvent,
    SuppressionEntry,
    UnsubscribeReason,
    utcnow,
)

log = logging.getLogger("mailrelay.engagement")

MAX_QUEUE = 100_000  # events waiting for the database; beyond, new ones are counted and dropped
#: Events per transaction. Encoding a batch for the database runs in the event loop (~8 us an
#: event on the test VM): 2000 held it ~16 ms, a stall every clicker then waits out; 250 keep each
#: under ~2 ms, and a burst wakes the writer as soon as a batch is full.
MAX_BATCH = 250


class Engagement:
    def __init__(self, storage: Storage, *, flush_interval: float = 0.2,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._storage = storage
        self._interval = flush_interval
        self._clock = clock
        self._queue: list[tuple[str, str, LogEntry]] = []
        self._wake = asyncio.Event()
        self._account_of: dict[str, int] = {}
        self.dropped = 0

    def record(self, email_id: str, recipient: str, event: RecipientEvent) -> None:
        """Queue an event for the recipient's send log (written within ``flush_interval``)."""
        if len(self._queue) >= MAX_QUEUE:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("recipient events dropped: the database does not keep up",
                            extra={"event": "engagement_dropped", "dropped": self.dropped})
            return
        text = event.link or (event.type.value if event.reason_type is None
                              else f"unsubscribe: {UnsubscribeReason(event.reason_type).text}")
        self._queue.append((email_id, recipient, LogEntry(self._clock(), LogKind.FEEDBACK, text[:1000],
                                                          rule=event.type.value, event=event)))
        if len(self._queue) >= MAX_BATCH:
            self._wake.set()

    async def account_of(self, api_user: str) -> int | None:
        """The account of an API user (cached: a user never changes account)."""
        acct = self._account_of.get(api_user)
        if acct is None:
            user = await self._storage.accounts.get_api_user(api_user)
            if user is None:
                return None
            acct = self._account_of[api_user] = user.account_id
        return acct

    async def unsubscribe(self, account_id: int, email_id: str, recipient: str,
                          reason: UnsubscribeReason, ip: str, user_agent: str) -> None:
        """Put ``recipient`` on the account's unsubscribe list now (idempotent; a later call sets
        the reason type), and queue the event."""
        now = self._clock()
        await self._storage.suppressions.add([SuppressionEntry(
            account_id=account_id, kind=ListKind.UNSUBSCRIBE, value=recipient.strip().lower(),
            api_user=ALL_API_USERS, created_at=now, reason_code=int(reason),
            reason=f"recipient unsubscribed from {email_id}")])
        self.record(email_id, recipient, RecipientEvent(EventType.UNSUBSCRIBE, ip, user_agent,
                                                        reason_type=int(reason)))
        log.info("unsubscribed", extra={"event": "unsubscribed", "email_id": email_id,
                                        "account_id": account_id, "reason_type": int(reason)})

    async def unsubscribe_mailto(self, address: str, secrets: Sequence[bytes]) -> bool:
        """A mail to an unsubscribe mailbox we made (``tokens.mailto_local``): unsubscribe the
        recipient it names. False when the address is not one of ours or names nothing."""
        decoded = tokens.decode_mailto(address.rpartition("@")[0], secrets)
        if decoded is None:
            return False
        email_id, rhash = decoded
        for rec in await self._storage.statuses.get_message(email_id):
            if recipient_hash(rec.recipient) == rhash:
                await self.unsubscribe(rec.account_id, email_id, rec.recipient, UnsubscribeReason.NOT_WANTED,
                                       "", "mailto")
                return True
        return False

    async def flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await self._storage.statuses.append_logs(batch)
            except Exception:
                self._queue[:0] = batch  # keep them for the next round (bounded by MAX_QUEUE)
                raise

    async def run(self) -> None:
        delay = self._interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                delay = self._interval
            except Exception:
                log.exception("recipient events not written; retrying", extra={"event": "engagement_retry"})
                delay = min(max(delay * 2, 1.0), 30.0)

    async def close(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("recipient events lost at shutdown",
                          extra={"event": "engagement_lost", "count": len(self._queue)})
