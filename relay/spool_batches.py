"""The spool's batch writer: the one thread that writes, fsyncs and names message files.

:class:`relay.spool.Spool` queues a :class:`Job` per step (an appended chunk of a large message, a
commit, a worker's stage, a discard); the thread takes every job waiting at that moment and runs
them as one batch: each file written, the write-back of all of them started together
(``relay/writeback.py``), one fsync each, each renamed (a commit) or hard-linked (a stage) into
``queue/``, then ONE directory fsync for the batch. A job's ``done`` is called with its own error
or None once its file is durable in ``queue/``. A failing job fails alone: its tmp file (and its
queue link, after a failed directory fsync) is removed. Jobs of one writer are run in order.

Why the write-back start: plain fsyncs one after the other each wait for their own data write and
journal commit; with the whole batch's data in flight, the first fsync's journal commit carries the
others' (10 files: 2.2 ms one by one, 1.5 ms on 8 helper threads as before, 1.1 ms this way, with
no helper to wake). Each file's fsync is still what the guarantee rests on; the start is a hint.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relay.writeback import start_writeback

if TYPE_CHECKING:
    from relay.spool import SpoolWriter

log = logging.getLogger("mailrelay.spool")


class SpoolError(Exception):
    """The spool could not store or read a message."""


class SpoolFull(SpoolError):
    """The file system had no space left (ENOSPC, or the quota: EDQUOT) for a message."""


def unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _spool_error(exc: BaseException) -> SpoolError:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SpoolFull(str(exc))
    return SpoolError(str(exc))


@dataclass
class Job:
    kind: str  # "append" | "commit" | "stage" | "discard"
    writer: SpoolWriter
    data: bytes = b""
    done: Callable[[BaseException | None], None] | None = None


class BatchWriter:
    """Run by one thread (:meth:`run`); fed through :attr:`jobs`; ``None`` stops it after the batch."""

    def __init__(self, queue_dir: Path, *, fsync: bool, batch_max: int) -> None:
        self.queue_dir = queue_dir
        self._queue_prefix = os.path.join(queue_dir, "")  # plain strings: cheaper than pathlib per file
        self.fsync = fsync
        self.batch_max = batch_max
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()

    def _open(self, w: SpoolWriter) -> int:
        if w.fd is None:
            w.fd = os.open(w.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        return w.fd

    @staticmethod
    def _close(w: SpoolWriter) -> None:
        if w.fd is not None:
            fd, w.fd = w.fd, None
            try:
                os.close(fd)
            except OSError:  # already failing; the file is unlinked next
                pass

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def _write_commit(self, job: Job) -> int:
        """Write the rest of a committed message to its tmp file; returns the open descriptor."""
        w = job.writer
        fd = self._open(w)
        w.fd = None  # owned by the batch from here: closed in _finish_batch whatever happens
        try:
            self._write_all(fd, job.data)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _fsync_all(self, fds: list[int]) -> list[BaseException | None]:
        """fsync every descriptor, their write-back started together first; one error (or None) each."""
        if not self.fsync:
            return [None] * len(fds)
        if len(fds) > 1:
            for fd in fds:
                start_writeback(fd)
        errors: list[BaseException | None] = []
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError as e:
                errors.append(e)
            else:
                errors.append(None)
        return errors

    def _finish_batch(self, jobs: list[Job]) -> list[Job]:
        """Write, fsync (together), close and rename the batch's commits; returns those renamed.
        A staged job is linked into queue/ instead (its tmp/ name stays, see :meth:`stage`). A
        failing job is settled with its error here and its tmp file removed."""
        written: list[tuple[Job, int]] = []
        for job in jobs:
            try:
                written.append((job, self._write_commit(job)))
            except BaseException as e:
                self._fail(job, e)
        errors = self._fsync_all([fd for _, fd in written])
        renamed: list[Job] = []
        for (job, fd), err in zip(written, errors, strict=True):
            try:
                os.close(fd)
                if err is not None:
                    raise err
                queued = f"{self._queue_prefix}{job.writer.email_id}.msg"
                if job.kind == "stage":
                    os.link(job.writer.tmp_path, queued)
                else:
                    os.rename(job.writer.tmp_path, queued)
                renamed.append(job)
            except BaseException as e:
                self._fail(job, e)
        return renamed

    def _fail(self, job: Job, e: BaseException) -> None:
        log.error("spool write failed", extra={"event": "spool_error", "error": repr(e)})
        self._close(job.writer)  # an open descriptor would keep the unlinked file's space
        job.writer.tmp_path.unlink(missing_ok=True)
        self._settle(job, _spool_error(e))

    def _fsync_dir(self) -> None:
        fd = os.open(self.queue_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    nxt = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            commits: list[Job] = []
            for job in batch:
                try:
                    if job.kind == "append":
                        self._write_all(self._open(job.writer), job.data)
                        self._settle(job, None)
                    elif job.kind == "discard":
                        self._close(job.writer)
                        job.writer.tmp_path.unlink(missing_ok=True)
                        self._settle(job, None)
                    else:
                        commits.append(job)
                except BaseException as e:
                    self._fail(job, e)
            committed = self._finish_batch(commits) if commits else []
            if committed:
                err: BaseException | None = None
                try:
                    if self.fsync:
                        self._fsync_dir()
                except OSError as e:
                    err = _spool_error(e)
                    for job in committed:
                        unlink_if_there(f"{self._queue_prefix}{job.writer.email_id}.msg")
                        if job.kind == "stage":
                            job.writer.tmp_path.unlink(missing_ok=True)
                for job in committed:
                    self._settle(job, err)

    @staticmethod
    def _settle(job: Job, exc: BaseException | None) -> None:
        if job.done is not None:
            job.done(exc)
