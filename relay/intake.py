"""Intake: turn a received message into a durable spool entry plus its status rows.

Order of a submission (the 250 reply is sent by the caller only after :meth:`Intake.accept`
returns):

1. ``spool.commit``: content + envelope fsync'd and renamed into the queue (group-committed).
2. ``statuses.record_submissions``: the message row, SENDING rows for accepted recipients and
   INVALID rows for intercepted ones, in one transaction (group-committed by the storage).
3. Hand-off to delivery (a callback; the delivery stage registers it).

If step 2 fails the spool entry is removed and the caller answers 451: the client keeps the mail
and retries, and nothing half-recorded is delivered. If the process dies between 1 and 2, the
spool entry exists without rows; :meth:`reconcile` (run at start-up, before listening) writes the
rows from the envelope stored in the spool, so every spooled message is recorded and delivered.
This is the one window where a client may see no 250 and retry although the first copy is kept —
the same as Postfix after its queue file is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from relay.spool import Spool, SpoolWriter
from storage.protocols import StatusRepo
from storage.records import SubmissionRecord

log = logging.getLogger("mailrelay.intake")

DeliveryHook = Callable[[SubmissionRecord], Awaitable[None]]


class IntakeError(Exception):
    """The message could not be made durable or recorded; answer 4xx."""


class Intake:
    def __init__(self, spool: Spool, statuses: StatusRepo) -> None:
        self.spool = spool
        self.statuses = statuses
        self._delivery_hooks: list[DeliveryHook] = []

    def on_accepted(self, hook: DeliveryHook) -> None:
        self._delivery_hooks.append(hook)

    async def accept(self, writer: SpoolWriter, record: SubmissionRecord) -> None:
        email_id = record.message.email_id
        try:
            await self.spool.commit(writer, record)
        except Exception as e:
            log.error("spool commit failed", extra={"event": "intake_spool_failed", "email_id": email_id})
            raise IntakeError(str(e)) from e
        try:
            await self.statuses.record_submissions([record])
        except Exception as e:
            log.exception("status write failed", extra={"event": "intake_status_failed", "email_id": email_id})
            try:
                await self.spool.remove(email_id)
            except OSError:
                log.exception("spool cleanup failed", extra={"event": "intake_cleanup_failed", "email_id": email_id})
            raise IntakeError(str(e)) from e
        for hook in self._delivery_hooks:
            await hook(record)

    async def record_intercepted(self, record: SubmissionRecord) -> None:
        """Status rows for a transaction that ended without DATA (only refused recipients)."""
        await self.statuses.record_submissions([record])

    async def reconcile(self, batch_size: int = 500) -> int:
        """Write status rows for spool entries that have none. Returns how many were written."""
        ids = await asyncio.to_thread(lambda: list(self.spool.enumerate()))
        written = 0
        for i in range(0, len(ids), batch_size):
            chunk = ids[i : i + batch_size]
            known = await self.statuses.known_email_ids(chunk)
            missing = [e for e in chunk if e not in known]
            if not missing:
                continue
            records = [await self.spool.read_envelope(e) for e in missing]
            await self.statuses.record_submissions(records)
            written += len(records)
        if written:
            log.warning(
                "recorded spooled messages that had no status rows",
                extra={"event": "intake_reconciled", "count": written},
            )
        return written
