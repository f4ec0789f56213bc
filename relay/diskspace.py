"""DiskGuard: the free-space reserve (Postfix's ``queue_minfree``) that keeps delivery able to finish.

Every queued recipient must still get its outcome written (a status row and a send-log line in
the database, a rewrite of its message's delivery state in ``spool/meta``) before its spool file
may go. If new mail could take the last bytes of the disk, those writes would fail and nothing
could ever free space again. So new mail is refused with ``452 4.3.1`` while the free space of
the watched file systems (the spool's, and the SQLite database's when it is elsewhere) is below

    reserve = min_free + STATE_BYTES x messages + ROW_BYTES x recipients waiting for delivery here

and delivery, which only needs a little of that reserve and frees space as mail leaves, goes on.
A message is admitted only if it fits above the reserve together with its own recipients'
outcomes, so the refusal comes at MAIL FROM (SIZE=) or during DATA, never after a 250.

Free space is measured with ``os.statvfs`` in a worker thread, at most once per ``ttl`` seconds
(callers in between share the last figure, minus what was accepted since), so the SMTP loop makes
no file-system call per command. ``min_free = 0`` turns the reserve off (not recommended: a full
disk then stops delivery until an operator frees space).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("mailrelay.disk")

#: Bytes kept per message waiting for delivery: its delivery state in ``spool/meta`` (one 4 KiB
#: block, written at its first deferral and rewritten through a temporary file after each attempt).
STATE_BYTES = 4096
#: Bytes kept per recipient waiting for delivery: its outcome (a status update and a send-log line
#: with their index entries: a few hundred bytes in either database), with room for a retry or two.
ROW_BYTES = 1024

#: What the node has waiting for delivery: (messages, recipients).
Waiting = Callable[[], tuple[int, int]]


def _cost(messages: int, recipients: int) -> int:
    return STATE_BYTES * max(0, messages) + ROW_BYTES * max(0, recipients)


class DiskGuard:
    def __init__(self, paths: Sequence[Path], min_free: int, waiting: Waiting = lambda: (0, 0), *,
                 ttl: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> None:
        self.paths = list(dict.fromkeys(paths))
        self.min_free = min_free
        self.waiting = waiting
        self.ttl = ttl
        self._clock = clock
        self._statvfs = statvfs
        self._free: int | None = None
        self._measured_at = float("-inf")
        self._debit = 0  # bytes accepted since the last measurement
        self._refresh: asyncio.Task[int] | None = None
        self._low = False

    @property
    def enabled(self) -> bool:
        return self.min_free > 0

    def reserve(self) -> int:
        messages, recipients = self.waiting()
        return self.min_free + _cost(messages, recipients)

    def _measure(self) -> int:
        """Bytes available to us on the fullest watched file system (blocking: runs in a thread)."""
        free: int | None = None
        for p in self.paths:
            st = self._statvfs(p)
            avail = st.f_bavail * st.f_frsize
            free = avail if free is None else min(free, avail)
        return free if free is not None else 2**62

    async def _refreshed(self) -> int:
        try:
            free = await asyncio.to_thread(self._measure)
        except OSError as e:  # cannot measure: trust the last figure (or none) rather than refuse all mail
            log.warning(f"free space not measured: {e}", extra={"event": "disk_measure_failed"})
            free = self._free if self._free is not None else 2**62
        self._free, self._debit, self._measured_at = free, 0, self._clock()
        return free

    async def free(self) -> int:
        """Free bytes now (a measurement at most ``ttl`` old, minus what was accepted since)."""
        if self._free is None or self._clock() - self._measured_at >= self.ttl:
            if self._refresh is None or self._refresh.done():  # one measurement serves every caller
                self._refresh = asyncio.ensure_future(self._refreshed())
            await asyncio.shield(self._refresh)
        assert self._free is not None
        return self._free - self._debit

    async def admits(self, size: int = 0, recipients: int = 0) -> bool:
        """Whether a message of ``size`` bytes for ``recipients`` recipients still fits above the reserve."""
        if not self.enabled:
            return True
        free = await self.free()
        reserve = self.reserve()
        low = free < reserve
        if low != self._low:  # the state, not each refusal, is logged
            self._low = low
            if low:
                log.warning("free disk space below the reserve: new mail gets 452 4.3.1 until delivery frees "
                            "space", extra={"event": "disk_low", "free": free, "reserve": reserve})
            else:
                log.info("free disk space above the reserve again: accepting mail",
                         extra={"event": "disk_ok", "free": free, "reserve": reserve})
        return free - size - (_cost(1, recipients) if size or recipients else 0) >= reserve

    def debit(self, size: int) -> None:
        """A message of ``size`` bytes was spooled: count it until the next measurement sees it."""
        self._debit += size
