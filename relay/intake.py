"""Intake: turn a received message into a durable spool entry plus its status rows.

Order of a submission:

1. ``spool.commit``: content + envelope fsync'd and renamed into the queue (group-committed).
   :meth:`Intake.accept` returns here and the caller answers 250: the message is durable.
2. Right after, in the background: ``statuses.record_submissions`` — the message row, SENDING
   rows for accepted recipients and INVALID rows for intercepted ones, in one transaction
   (group-committed by the storage; retried while the database is unavailable).
3. Then the hand-off to delivery (a callback; the delivery stage registers it), so delivery never
   updates a row that does not exist yet.

Writing the rows after the reply keeps the database commit off the client's critical path (the
benchmark's end-to-end rate rose ~5 %). Records accepted meanwhile are written together: one
``record_submissions`` call (three multi-row statements) per round instead of one per message,
while one round is in flight the next collects. A round that fails is retried one record per task
(as before the rounds), so a record the database refuses for good holds up only itself.

If the process dies between 1 and 2, the spool entry exists without rows; :meth:`reconcile` (run
at start-up, before listening and before delivery restores the spool) writes them from the
envelope stored in the spool file. So a message answered 250 is always recorded and delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from relay.spool import Spool, SpoolFull, SpoolWriter
from storage.protocols import StatusRepo
from storage.records import SubmissionRecord

log = logging.getLogger("mailrelay.intake")

DeliveryHook = Callable[[SubmissionRecord], Awaitable[None]]


class IntakeError(Exception):
    """The message could not be made durable or recorded; answer 4xx."""


class IntakeFull(IntakeError):
    """No space left to spool the message; answer 452 4.3.1."""


class Accepting(Protocol):
    """What the accept sequence (``relay/accept.py``) needs of the intake: :class:`Intake` here,
    or an intake worker's hand-off to its owner (``relay/workers/remote.py``)."""

    async def accept(self, writer: SpoolWriter, record: SubmissionRecord) -> None: ...

    async def record_intercepted(self, record: SubmissionRecord) -> None: ...


class Intake:
    def __init__(self, spool: Spool, statuses: StatusRepo) -> None:
        self.spool = spool
        self.statuses = statuses
        self._delivery_hooks: list[DeliveryHook] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._unrecorded: list[SubmissionRecord] = []  # spooled, waiting for the next round of rows
        self._recorder: asyncio.Task[None] | None = None

    def on_accepted(self, hook: DeliveryHook) -> None:
        self._delivery_hooks.append(hook)

    async def accept(self, writer: SpoolWriter, record: SubmissionRecord) -> None:
        await self._durable(self.spool.commit(writer, record), record)

    async def publish(self, tmp_name: str, record: SubmissionRecord, content: bytes | None = None) -> None:
        """A message an intake worker staged (``relay/workers/``): durable in queue/ when this
        returns, then recorded and delivered like one accepted here (``content``, when the worker
        sent it, spares delivery a file read)."""
        await self._durable(self.spool.publish(tmp_name, record.message.email_id, content), record)

    async def _durable(self, step: Coroutine[Any, Any, None], record: SubmissionRecord) -> None:
        email_id = record.message.email_id
        try:
            await step
        except SpoolFull as e:
            log.error("spool commit failed: no space left", extra={"event": "intake_spool_full", "email_id": email_id})
            raise IntakeFull(str(e)) from e
        except Exception as e:
            log.error("spool commit failed", extra={"event": "intake_spool_failed", "email_id": email_id})
            raise IntakeError(str(e)) from e
        self.adopt(record)

    def adopt(self, record: SubmissionRecord) -> None:
        """A message durable in queue/: its rows are written in the next round, then delivery."""
        self._unrecorded.append(record)
        if self._recorder is None:
            self._recorder = self._spawn(self._record_rounds())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _record_rounds(self) -> None:
        """Write the rows of every record waiting, then hand them to delivery; repeat while more came."""
        try:
            while self._unrecorded:
                batch, self._unrecorded = self._unrecorded, []
                try:
                    await self.statuses.record_submissions(batch)
                except Exception:
                    log.exception("status write failed; retrying", extra={
                        "event": "intake_status_retry", "email_id": batch[0].message.email_id, "count": len(batch)})
                    for record in batch:  # one task each: a record refused for good holds up only itself
                        self._spawn(self._record_then_deliver(record, wait_first=True))
                    continue
                for record in batch:
                    await self._deliver(record)
        finally:
            self._recorder = None

    async def _record_then_deliver(self, record: SubmissionRecord, *, wait_first: bool) -> None:
        """Status rows of one record, then hand-off to delivery. A database outage only delays
        both: the message is durable in the spool and the write is retried."""
        delay = 0.5
        if wait_first:
            await asyncio.sleep(delay)
            delay *= 2
        while True:
            try:
                await self.statuses.record_submissions([record])
                break
            except Exception:
                log.exception("status write failed; retrying", extra={
                    "event": "intake_status_retry", "email_id": record.message.email_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        await self._deliver(record)

    async def _deliver(self, record: SubmissionRecord) -> None:
        for hook in self._delivery_hooks:
            await hook(record)

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait for status rows still being written (shutdown; tests). Whatever is left when the
        process stops is written from the spool by :meth:`reconcile` at the next start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and (left := deadline - loop.time()) > 0:  # a round may spawn retries
            await asyncio.wait(list(self._tasks), timeout=left)

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
