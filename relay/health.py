"""Readiness (``GET /readyz``): the database answers a trivial query, the spool takes a file and
every intake worker process is running.

Each probe is bounded by a timeout, and the file system probe (create, fsync-free write, unlink a
small file in ``spool/tmp``, where receptions are written) runs in a thread. A leftover probe file
(a crash between create and unlink) is purged with the other unfinished receptions at the next
start.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from storage.protocols import Storage


def _touch(directory: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".readyz-", dir=directory)
    try:
        os.write(fd, b"ready\n")
    finally:
        os.close(fd)
        os.unlink(name)


class Readiness:
    def __init__(self, storage: Storage, spool_tmp: Path, timeout: float = 5.0,
                 workers: Callable[[], tuple[int, int]] | None = None) -> None:
        self.storage = storage
        self.spool_tmp = spool_tmp
        self.timeout = timeout
        self.workers = workers  # (running, configured) intake worker processes

    async def problems(self) -> list[str]:
        """Empty when ready; else one line per failed probe, naming it and why."""
        out: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                await self.storage.ping()
        except TimeoutError:
            out.append(f"database: no answer within {self.timeout:g} s")
        except Exception as e:  # any failure of the query is the answer to the probe
            out.append(f"database: {type(e).__name__}: {e}")
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.to_thread(_touch, self.spool_tmp)
        except TimeoutError:
            out.append(f"spool: {self.spool_tmp} did not take a file within {self.timeout:g} s")
        except OSError as e:
            out.append(f"spool: {self.spool_tmp} is not writable: {e.strerror or e}")
        if self.workers is not None:
            running, configured = self.workers()
            if running < configured:
                out.append(f"intake: {running} of {configured} worker processes running (the others are restarting)")
        return out
