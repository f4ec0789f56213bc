"""The durable spool: the ONLY code that fsyncs message files.

Layout under the spool directory::

    tmp/<email_id>.part     message being received (never delivered, purged at start-up);
                            an intake worker's is <email_id>.w<pid>.part, see below
    queue/<email_id>.msg    committed message: content, then the envelope trailer
    meta/<email_id>.json    delivery state (attempts, next attempt, done recipients), rewritten
                            atomically (rename) after each attempt; owned by relay/delivery/state.py

A committed file is ``content || envelope-json || footer`` where the 16-byte footer is
``b"MRSP1\\n"`` + the envelope length as 10 ASCII digits. The envelope is the whole
:class:`storage.records.SubmissionRecord` (its codec: ``relay/spool_envelope.py``), so the status
table can be rebuilt from the spool (start-up reconciliation) and delivery needs nothing else.

Guarantee: :meth:`Spool.commit` returns only after the file was written, fsync'd, renamed into
``queue/`` and the ``queue/`` directory fsync'd. The 250 reply is sent only after it returns.
Commits are group-committed by one thread (``relay/spool_batches.py``): it takes every commit
waiting at that moment, writes each file, starts their write-back together, fsyncs each, renames
them and fsyncs the directory ONCE for the whole batch.
Nothing here runs on the event loop except bookkeeping; file I/O is on that thread or to_thread.

With intake worker processes (``relay/workers/``) the worker :meth:`Spool.stage`s the message:
written and fsync'd under ``tmp/`` with a name that carries its pid, then hard-linked into
``queue/`` and the directory fsync'd, batched like commits — durable in the queue in the worker's
one batch, with no second trip through the owner's disk thread. The owner's :meth:`Spool.publish`
then only adopts it (no disk I/O on the message's path) and removes the ``tmp/`` link later, in
batches. The ``tmp/`` link is what tells the owner whose a queue file is while it is being handed
over: when a worker dies, every ``tmp/`` link of its own that the owner never adopted is a message
never answered 250, and :meth:`Spool.purge_staged` removes it from ``queue/`` too (as unfinished
receptions are removed at start). A kill -9 of the owner (its workers die with it) or of the machine
leaves such files in ``queue/``: they are delivered after the restart, like a message committed
but not yet answered when a single process is killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from relay.batched_calls import BatchedCalls
from relay.spool_batches import BatchWriter, Job, unlink_if_there
from relay.spool_batches import SpoolError as SpoolError  # the spool's errors, where they were
from relay.spool_batches import SpoolFull as SpoolFull
from relay.spool_envelope import EnvelopeError, decode_envelope, encode_envelope
from storage.records import (
    SubmissionRecord,
)

log = logging.getLogger("mailrelay.spool")

FOOTER_MAGIC = b"MRSP1\n"
FOOTER_LEN = len(FOOTER_MAGIC) + 10
#: Content is kept in memory up to this size, then streamed to the tmp file by the worker.
MEMORY_CHUNK = 256 * 1024
#: Recently committed contents kept in memory for delivery (total and per message).
RECENT_BUDGET = 32 * 1024 * 1024
RECENT_ITEM_MAX = 128 * 1024
#: How long a stop waits for removals of delivered messages still in flight (each is one unlink).
STOP_REMOVALS_TIMEOUT = 10.0








@dataclass
class SpoolWriter:
    """One message being received. Not thread-safe; owned by one SMTP session."""

    spool: Spool
    email_id: str
    tmp_path: Path
    buffered: list[bytes] = field(default_factory=list)
    buffered_len: int = 0
    size: int = 0
    fd: int | None = None  # opened lazily by the worker when content exceeds MEMORY_CHUNK
    closed: bool = False

    async def write(self, chunk: bytes) -> None:
        if self.closed:
            raise SpoolError("writer already closed")
        self.buffered.append(chunk)
        self.buffered_len += len(chunk)
        self.size += len(chunk)
        if self.buffered_len >= MEMORY_CHUNK:
            data = b"".join(self.buffered)
            self.buffered.clear()
            self.buffered_len = 0
            await self.spool._submit("append", self, data)

    async def discard(self) -> None:
        if not self.closed:
            self.closed = True
            self.buffered.clear()
            await self.spool._submit("discard", self)


class Spool:
    """Node-local message store. Call :meth:`start` before use and :meth:`stop` at shutdown."""

    def __init__(self, root: Path, *, fsync: bool = True, batch_max: int = 256, stage_tag: str = "") -> None:
        self.root = root
        # An intake worker's spool: its tmp files are "<email_id>.<tag>.part" (the owner can tell
        # whose they are), it never purges tmp/ (the owner's) and never writes queue/.
        self.stage_tag = stage_tag
        self.tmp_dir = root / "tmp"
        self.queue_dir = root / "queue"
        self.meta_dir = root / "meta"
        # plain strings for the per-message paths: pathlib's joins cost more than the syscalls
        self._queue_prefix = os.path.join(self.queue_dir, "")
        self._meta_prefix = os.path.join(self.meta_dir, "")
        self.fsync = fsync
        self.batch_max = batch_max
        self._batches = BatchWriter(self.queue_dir, fsync=fsync, batch_max=batch_max)
        self._thread: threading.Thread | None = None
        # Contents of recently committed messages, so the first delivery attempt needs no file read.
        # Only touched on the event loop.
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._removals = BatchedCalls[tuple[str, bool]](lambda item: self.remove_sync(item[0], has_meta=item[1]))
        # The owner's side of staged messages: tmp/ names adopted whose tmp/ link is not removed yet
        # (see purge_staged), and their removals, batched like those of delivered messages.
        self._adopted: set[str] = set()
        self._link_removals = BatchedCalls[str](lambda name: unlink_if_there(os.path.join(self.tmp_dir, name)))

    # region lifecycle
    def prepare(self) -> int:
        """Create the directories and purge unfinished receptions. Returns how many were purged."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        purged = 0
        if self.stage_tag:  # a worker: tmp/ belongs to the owner, which purged it before starting us
            return 0
        for p in self.tmp_dir.iterdir():
            p.unlink(missing_ok=True)
            purged += 1
        return purged

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        purged = await asyncio.to_thread(self.prepare)
        if purged:
            log.info("purged unfinished receptions", extra={"event": "spool_purge_tmp", "count": purged})
        self._thread = threading.Thread(target=self._batches.run, name="mailrelay-spool", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        await self._removals.drain(STOP_REMOVALS_TIMEOUT)  # delivered messages' files: finish removing them
        await self._link_removals.drain(STOP_REMOVALS_TIMEOUT)  # (a leftover tmp/ link is harmless: purged at start)
        if not self.stage_tag:  # the owner, its workers gone: what none handed over goes now, while
            # the tmp/ links still tell it from adopted mail (the start-up purge of tmp/ cannot)
            purged = await asyncio.to_thread(self.purge_staged, "w*", frozenset(self._adopted))
            if purged:
                log.warning("removed messages intake workers had not handed over", extra={
                    "event": "worker_staged_purged", "count": purged})
        if self._thread is not None:
            self._batches.jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # endregion

    def new_writer(self, email_id: str) -> SpoolWriter:
        name = f"{email_id}.{self.stage_tag}.part" if self.stage_tag else f"{email_id}.part"
        return SpoolWriter(self, email_id, self.tmp_dir / name)

    async def purge_worker(self, tag: str) -> int:
        """After an intake worker ended (and its channel was drained): remove what it staged and
        did not hand over. Returns how many messages went."""
        return await asyncio.to_thread(self.purge_staged, tag, frozenset(self._adopted))

    def purge_staged(self, tag: str, adopted: frozenset[str] = frozenset()) -> int:
        """Remove the tmp files of a dead intake worker (blocking). A message it staged but did not
        hand over (its tmp/ name not in ``adopted``) was never answered 250: like an unfinished
        reception it goes, from queue/ too. Returns how many messages went."""
        purged = 0
        for p in self.tmp_dir.glob(f"*.{tag}.part"):
            if p.name not in adopted:
                email_id = p.name.split(".", 1)[0]
                unlink_if_there(f"{self._queue_prefix}{email_id}.msg")
                purged += 1
            p.unlink(missing_ok=True)
        return purged

    def path_of(self, email_id: str) -> Path:
        return self.queue_dir / f"{email_id}.msg"

    async def commit(self, writer: SpoolWriter, record: SubmissionRecord) -> None:
        """Make the message durable. Returns only when it is fsync'd and renamed into queue/."""
        data = await self._finish(writer, record, "commit")
        if data is not None:  # all of it was in memory: keep it for delivery
            self._remember(writer.email_id, data)

    async def stage(self, writer: SpoolWriter, record: SubmissionRecord) -> tuple[str, bytes | None]:
        """An intake worker's :meth:`commit`: the whole file written and fsync'd in tmp/, linked into
        queue/ (directory fsync'd), its tmp/ name kept. Returns that name for the owner's
        :meth:`publish`, and the content when it was all in memory and small (the owner keeps it
        for the first delivery attempt)."""
        return writer.tmp_path.name, await self._finish(writer, record, "stage")

    async def _finish(self, writer: SpoolWriter, record: SubmissionRecord, kind: str) -> bytes | None:
        """Write the rest of the message and its envelope trailer, fsync (``kind`` "commit": and
        rename into queue/). Returns the content when it was all in memory and small, else None."""
        if writer.closed:
            raise SpoolError("writer already closed")
        writer.closed = True
        data = b"".join(writer.buffered)
        writer.buffered.clear()
        env = encode_envelope(record)
        await self._submit(kind, writer, data + env + FOOTER_MAGIC + b"%010d" % len(env))
        return data if writer.size == len(data) <= RECENT_ITEM_MAX else None

    async def publish(self, tmp_name: str, email_id: str, content: bytes | None = None) -> None:
        """The owner's half: adopt a message a worker staged (already durable in queue/), so a
        purge after that worker's death keeps it; its tmp/ link is removed in the background."""
        if "/" in tmp_name or not tmp_name.startswith(email_id + ".") or not tmp_name.endswith(".part"):
            raise SpoolError(f"not a staged file name: {tmp_name!r}")
        self._adopted.add(tmp_name)
        self._link_removals.post(tmp_name, self._adopted.discard)
        if content is not None and len(content) <= RECENT_ITEM_MAX:
            self._remember(email_id, content)

    def _remember(self, email_id: str, content: bytes) -> None:
        self._recent[email_id] = content
        self._recent_bytes += len(content)
        while self._recent_bytes > RECENT_BUDGET and self._recent:
            _, old = self._recent.popitem(last=False)
            self._recent_bytes -= len(old)

    def _forget(self, email_id: str) -> None:
        content = self._recent.pop(email_id, None)
        if content is not None:
            self._recent_bytes -= len(content)

    async def remove(self, email_id: str, *, has_meta: bool = True) -> None:
        """Delete a delivered message (see :meth:`remove_sync`); returns once it is gone. Removals
        share thread trips (relay/batched_calls.py): an unlink costs less than the trip."""
        self._forget(email_id)
        await self._removals.run((email_id, has_meta))

    def remove_sync(self, email_id: str, *, has_meta: bool = True) -> None:
        """Delete a message and its delivery state (the message first: a leftover meta is harmless)."""
        unlink_if_there(f"{self._queue_prefix}{email_id}.msg")
        if has_meta:
            unlink_if_there(f"{self._meta_prefix}{email_id}.json")

    # region delivery state (not fsync'd: it survives a process crash via the page cache; after a
    # machine crash an older state only means an earlier retry time or a repeated attempt)
    def write_meta_sync(self, email_id: str, data: bytes) -> None:
        tmp = self.meta_dir / f".{email_id}.json.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.meta_dir / f"{email_id}.json")
        except OSError:  # e.g. ENOSPC: the previous state stays, no partial file
            tmp.unlink(missing_ok=True)
            raise

    def read_meta_sync(self, email_id: str) -> bytes | None:
        try:
            return (self.meta_dir / f"{email_id}.json").read_bytes()
        except FileNotFoundError:
            return None

    # endregion

    # region reading
    def enumerate(self) -> Iterator[str]:
        """email_ids of committed messages, oldest first."""
        names = sorted(p.name for p in self.queue_dir.iterdir() if p.name.endswith(".msg"))
        for n in names:
            yield n[: -len(".msg")]

    def read_envelope_sync(self, email_id: str) -> SubmissionRecord:
        try:
            return self._read_envelope_sync(email_id)
        except EnvelopeError as e:
            raise SpoolError(f"{email_id}: {e}") from e

    def _read_envelope_sync(self, email_id: str) -> SubmissionRecord:
        with open(self.path_of(email_id), "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            if end < FOOTER_LEN:
                raise SpoolError(f"{email_id}: truncated spool file")
            f.seek(end - FOOTER_LEN)
            footer = f.read(FOOTER_LEN)
            if not footer.startswith(FOOTER_MAGIC):
                raise SpoolError(f"{email_id}: bad spool footer")
            env_len = int(footer[len(FOOTER_MAGIC):])
            f.seek(end - FOOTER_LEN - env_len)
            return decode_envelope(f.read(env_len))

    def read_content_sync(self, email_id: str) -> bytes:
        with open(self.path_of(email_id), "rb") as f:
            raw = f.read()
        env_len = int(raw[-10:])
        return raw[: len(raw) - FOOTER_LEN - env_len]

    async def read_envelope(self, email_id: str) -> SubmissionRecord:
        return await asyncio.to_thread(self.read_envelope_sync, email_id)

    async def read_content(self, email_id: str) -> bytes:
        recent = self._recent.get(email_id)
        if recent is not None:  # just accepted: no file read (the copy on disk is identical)
            return recent
        return await asyncio.to_thread(self.read_content_sync, email_id)

    # endregion

    # region the batch writer (relay/spool_batches.py)
    async def _submit(self, kind: str, writer: SpoolWriter, data: bytes = b"") -> None:
        assert self._loop is not None, "Spool.start() was not called"
        loop = self._loop
        fut: asyncio.Future[None] = loop.create_future()

        def done(exc: BaseException | None) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

            loop.call_soon_threadsafe(settle)

        self._batches.jobs.put(Job(kind, writer, data, done))
        await fut

    # endregion
