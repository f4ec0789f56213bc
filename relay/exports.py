"""Offline exports of status data: the background worker that writes ``<data dir>/exports/<id>.csv.gz``.

- A task is created queued (HTTP ``POST /v1/exports`` or ``mailrelay exports create``); the worker
  claims the oldest queued task atomically (``ExportRepo.claim``: on PostgreSQL ``FOR UPDATE SKIP
  LOCKED``, so with several nodes on one database each task runs on exactly one of them).
- The rows come from ``StatusRepo.stream`` (keyset-paged chunks) and are written chunk by chunk:
  CSV encoding and gzip run in a worker thread, so neither the event loop nor memory grows with the
  row count. Progress (rows written / rows counted at the start) is stored after every chunk (at
  most once per :attr:`ExportWorker.progress_every` seconds). The file is written as ``<id>.part``
  and renamed when complete, so a download never sees half a file.
- At start-up, tasks this node was running when it stopped (crash, kill) are marked failed with a
  message saying so; ``POST /v1/exports/{id}/retry`` (or ``mailrelay exports retry``) queues them again.
- Files are kept :data:`KEEP` (7 days) after the task finished, then deleted; the task row stays,
  and its download answers 410 with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from relay.status_json import log_json
from storage.protocols import Storage
from storage.records import ExportTask, StatusRecord, utcnow

log = logging.getLogger("mailrelay.exports")

KEEP = timedelta(days=7)
CHUNK = 1000
COLUMNS = ("email_id", "recipient", "status", "sub_status", "reason", "api_user", "sender", "domain", "subject",
           "label", "email_type", "request_time", "request_ip", "send_time", "send_ip", "mx_host", "mx_ip",
           "updated_at", "log")
INTERRUPTED = "interrupted: the node running this export stopped before it finished; retry it"


def _iso(t: datetime | None) -> str:
    return t.isoformat() if t else ""


def csv_row(r: StatusRecord) -> list[Any]:
    return [r.email_id, r.recipient, int(r.status), "" if r.sub_status is None else int(r.sub_status), r.reason,
            r.api_user, r.sender, r.domain, r.subject, r.label or "", r.email_type.value if r.email_type else "",
            _iso(r.request_time), r.request_ip, _iso(r.send_time), r.send_ip or "", r.mx_host or "", r.mx_ip or "",
            _iso(r.updated_at), json.dumps([log_json(e) for e in r.log], ensure_ascii=False)]


class _GzipCsv:
    """A CSV.gz being written; every method runs in a worker thread (blocking file and zlib work)."""

    def __init__(self, path: Path, name: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(path, "wb")  # closed in close() or abort()
        self._gz = gzip.GzipFile(filename=name, fileobj=self._raw, mode="wb", compresslevel=6)
        self._text: IO[str] = io.TextIOWrapper(self._gz, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text)
        self._csv.writerow(COLUMNS)

    def write(self, rows: list[list[Any]]) -> None:
        self._csv.writerows(rows)

    def close(self) -> None:
        self._text.flush()
        self._text.close()  # closes the gzip stream (writes its trailer), not the raw file
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()

    def abort(self) -> None:
        try:
            self._text.close()
        except (OSError, ValueError):
            pass
        self._raw.close()


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking file work in a thread. If the caller is cancelled, wait for the thread to
    finish first, so that no other call touches the same gzip stream while it is still running."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await fut
        raise


class ExportWorker:
    """Runs export tasks of this node. ``run()`` is the server's background loop; ``run_pending()``
    drains the queue once (the CLI without a server)."""

    def __init__(self, storage: Storage, directory: Path, node: str, *, keep: timedelta = KEEP,
                 poll_interval: float = 2.0, chunk: int = CHUNK, progress_every: float = 1.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.directory = directory
        self.node = node
        self.keep = keep
        self.poll_interval = poll_interval
        self.chunk = chunk
        self.progress_every = progress_every
        self.clock = clock
        self._wake = asyncio.Event()

    def path(self, task_id: str) -> Path:
        return self.directory / f"{task_id}.csv.gz"

    def wake(self) -> None:
        """A task was queued: look now instead of at the next poll."""
        self._wake.set()

    async def recover(self) -> int:
        """Start-up: tasks this node was running when it stopped become failed (retryable)."""
        n = await self.storage.exports.fail_running(self.node, self.clock(), INTERRUPTED)
        if n:
            log.warning(f"{n} export(s) interrupted by a restart marked failed",
                        extra={"event": "export_recovered", "count": n})
        await asyncio.to_thread(self._remove_partials)
        return n

    def _remove_partials(self) -> None:
        if self.directory.is_dir():
            for p in self.directory.glob("*.part"):
                p.unlink(missing_ok=True)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
                await self.run_pending()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database went away for a moment: try again at the next poll
                log.exception("export worker round failed", extra={"event": "export_worker_error"})
            self._wake.clear()
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def run_pending(self) -> int:
        """Claim and run queued tasks until none is left; returns how many ran."""
        n = 0
        while (task := await self.storage.exports.claim(self.node, self.clock())) is not None:
            await self.run_task(task)
            n += 1
        return n

    async def run_task(self, task: ExportTask) -> bool:
        final = self.path(task.id)
        part = final.with_suffix(".part")
        started = asyncio.get_running_loop().time()
        try:
            total = await self.storage.statuses.count(task.filter)
            await self.storage.exports.progress(task.id, self.node, 0, total)
            out = await asyncio.to_thread(_GzipCsv, part, final.name.removesuffix(".gz"))
            rows = 0
            last = started
            try:
                async for chunk in self.storage.statuses.stream(task.filter, chunk=self.chunk):
                    data = [csv_row(r) for r in chunk]
                    await _in_thread(out.write, data)
                    rows += len(data)
                    now = asyncio.get_running_loop().time()
                    if now - last >= self.progress_every:
                        last = now
                        await self.storage.exports.progress(task.id, self.node, rows, max(total, rows))
                await _in_thread(out.close)
            except BaseException:
                try:
                    await _in_thread(out.abort)
                except Exception:  # never let a cleanup error replace the real one (or a cancellation)
                    log.warning("export cleanup failed", extra={"event": "export_cleanup_failed", "export": task.id})
                raise
            size = await asyncio.to_thread(_publish, part, final)
        except asyncio.CancelledError:
            # shutting down: fail it now if we can (else start-up recovery does), so it can be retried
            try:
                async with asyncio.timeout(2):
                    await asyncio.to_thread(_discard, part)
                    await self.storage.exports.fail(task.id, self.node, self.clock(), INTERRUPTED)
            except Exception:  # best effort: recover() at the next start covers it
                pass
            raise
        except Exception as e:
            log.exception("export failed", extra={"event": "export_failed", "export": task.id})
            await asyncio.to_thread(_discard, part)
            await self.storage.exports.fail(task.id, self.node, self.clock(), f"{type(e).__name__}: {e}")
            return False
        if not await self.storage.exports.finish(task.id, self.node, self.clock(), rows, size):
            await asyncio.to_thread(_discard, final)  # the task was taken from us meanwhile
            return False
        log.info(f"export {task.id}: {rows} rows, {size} bytes",
                 extra={"event": "export_done", "export": task.id, "rows": rows, "bytes": size})
        return True

    async def sweep(self) -> int:
        """Delete files past their retention period (the task rows stay, marked expired)."""
        n = 0
        now = self.clock()
        for task in await self.storage.exports.expired(self.node, now - self.keep):
            await asyncio.to_thread(_discard, self.path(task.id))
            if await self.storage.exports.mark_expired(task.id, now):
                n += 1
        return n


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning(f"cannot remove {path}: {e}", extra={"event": "export_cleanup_failed"})


def _publish(part: Path, final: Path) -> int:
    part.rename(final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final.stat().st_size
