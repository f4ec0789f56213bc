"""DiskGuard: the reserve's arithmetic, and one file-system measurement per TTL (not per command)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from relay.diskspace import ROW_BYTES, STATE_BYTES, DiskGuard

MiB = 1024 * 1024


class FakeFs:
    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0
        self.fail = False

    def statvfs(self, path: Path) -> os.statvfs_result:
        self.calls += 1
        if self.fail:
            raise OSError("gone")
        # (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax)
        return os.statvfs_result((4096, 4096, 0, 0, self.free // 4096, 0, 0, 0, 0, 255))


async def test_reserve_counts_pending_recipients_and_the_message_itself() -> None:
    fs, now, waiting = FakeFs(100 * MiB), [0.0], (0, 0)
    g = DiskGuard([Path("/a"), Path("/a")], 64 * MiB, lambda: waiting, clock=lambda: now[0],
                  statvfs=fs.statvfs)
    assert g.reserve() == 64 * MiB
    own = STATE_BYTES + 2 * ROW_BYTES
    assert await g.admits() and await g.admits(36 * MiB - own, 2)
    assert not await g.admits(36 * MiB - own + 1, 2)  # its own outcomes would cross the reserve
    waiting = (512, 2048)  # 2 + 2 MiB of outcomes to write for the mail already queued
    assert g.reserve() == 68 * MiB
    assert not await g.admits(33 * MiB)
    g.debit(31 * MiB)  # accepted since the last measurement: counted until the next one
    assert await g.admits() and not await g.admits(2 * MiB)
    assert fs.calls == 1  # one measurement (of the one distinct path) served every check
    now[0] = 1.0
    assert await g.admits(2 * MiB) and fs.calls == 2  # re-measured: the debit is in the figure now


async def test_concurrent_checks_share_one_measurement_and_failures_do_not_refuse_mail() -> None:
    fs, now = FakeFs(10 * MiB), [0.0]
    g = DiskGuard([Path("/a")], 64 * MiB, clock=lambda: now[0], statvfs=fs.statvfs)
    assert await asyncio.gather(*(g.admits() for _ in range(20))) == [False] * 20
    assert fs.calls == 1
    fs.free, fs.fail, now[0] = 100 * MiB, True, 5.0
    assert not await g.admits()  # not measurable: the last figure stands
    fs.fail, now[0] = False, 10.0
    assert await g.admits()  # space came back: accepted again, by itself


async def test_zero_turns_the_reserve_off() -> None:
    fs = FakeFs(0)
    g = DiskGuard([Path("/a")], 0, statvfs=fs.statvfs)
    assert await g.admits(10 * MiB, 5) and fs.calls == 0
