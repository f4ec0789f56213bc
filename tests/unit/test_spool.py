"""The spool: commit makes a file in queue/ with the envelope; discard and crashes leave nothing."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

import relay.spool_batches as spool_batches
from relay.batched_calls import BatchedCalls
from relay.spool import MEMORY_CHUNK, Spool, SpoolError, SpoolFull
from storage.records import (
    EmailType,
    MessageRecord,
    RecipientOutcome,
    Status,
    SubmissionRecord,
    SubStatus,
)


def _record(email_id: str) -> SubmissionRecord:
    msg = MessageRecord(email_id, 7, "app1", "s@example.com", "Hi ✓", "lbl", EmailType.TRANSACTIONAL, 5,
                        datetime(2026, 11, 27, 5, 0, tzinfo=UTC), "127.0.0.1", "node1",
                        custom_args='{"order":"1042","名":"値"}')  # kept in the envelope: a crash keeps them
    return SubmissionRecord(msg, (RecipientOutcome("a@example.com", Status.SENDING),
                                  RecipientOutcome("b@bad", Status.INVALID, SubStatus.BLACKLIST, "why", "complaint")))


@pytest.fixture
async def spool(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Spool(tmp_path / "spool")
    await s.start()
    yield s
    await s.stop()


async def test_commit_round_trip(spool: Spool) -> None:
    w = spool.new_writer("ID1")
    await w.write(b"Subject: x\r\n\r\nbody\r\n")
    await spool.commit(w, _record("ID1"))
    assert list(spool.enumerate()) == ["ID1"]
    assert await spool.read_content("ID1") == b"Subject: x\r\n\r\nbody\r\n"
    assert await spool.read_envelope("ID1") == _record("ID1")
    assert not list(spool.tmp_dir.iterdir())


async def test_large_message_streams_through_tmp(spool: Spool) -> None:
    w = spool.new_writer("BIG")
    chunk = b"x" * 65536
    for _ in range(3 * MEMORY_CHUNK // len(chunk) + 1):
        await w.write(chunk)
    assert (spool.tmp_dir / "BIG.part").exists()  # content beyond the memory chunk is on disk already
    await spool.commit(w, _record("BIG"))
    content = await spool.read_content("BIG")
    assert len(content) == w.size and set(content) == {ord("x")}


async def test_discard_leaves_nothing(spool: Spool) -> None:
    w = spool.new_writer("GONE")
    await w.write(b"y" * (MEMORY_CHUNK + 10))
    await w.discard()
    assert not list(spool.tmp_dir.iterdir()) and not list(spool.enumerate())


async def test_concurrent_commits_group(spool: Spool) -> None:
    async def one(i: int) -> None:
        w = spool.new_writer(f"M{i:03d}")
        await w.write(b"body %d\r\n" % i)
        await spool.commit(w, _record(f"M{i:03d}"))

    await asyncio.gather(*(one(i) for i in range(100)))
    assert len(list(spool.enumerate())) == 100


async def test_start_purges_unfinished_receptions(tmp_path: Path) -> None:
    (tmp_path / "spool" / "tmp").mkdir(parents=True)
    (tmp_path / "spool" / "tmp" / "HALF.part").write_bytes(b"cut off in DATA")
    s = Spool(tmp_path / "spool")
    await s.start()
    try:
        assert not list(s.tmp_dir.iterdir()) and not list(s.enumerate())
    finally:
        await s.stop()


async def test_recent_content_is_served_from_memory_until_removed(spool: Spool) -> None:
    w = spool.new_writer("HOT")
    await w.write(b"Subject: hot\r\n\r\nbody\r\n")
    await spool.commit(w, _record("HOT"))
    spool.path_of("HOT").rename(spool.root / "moved.msg")  # the file is not read for the first attempt
    assert await spool.read_content("HOT") == b"Subject: hot\r\n\r\nbody\r\n"
    (spool.root / "moved.msg").rename(spool.path_of("HOT"))
    await spool.remove("HOT", has_meta=False)
    assert not spool.path_of("HOT").exists()
    with pytest.raises(FileNotFoundError):
        await spool.read_content("HOT")


async def test_removals_asked_together_are_all_done_and_a_failure_is_its_own(spool: Spool) -> None:
    """Removals waiting while a batch runs go in the next one; each caller returns once its own
    files are gone, and a file that cannot be removed fails only its own caller."""
    ids = [f"R{i}" for i in range(12)]
    for email_id in ids:
        w = spool.new_writer(email_id)
        await w.write(b"Subject: x\r\n\r\nbody\r\n")
        await spool.commit(w, _record(email_id))
        spool.write_meta_sync(email_id, b"{}")
    spool.path_of("BAD").mkdir()  # unlink() of a directory fails
    results = await asyncio.gather(*(spool.remove(e) for e in [*ids, "BAD"]), return_exceptions=True)
    assert results[:-1] == [None] * len(ids)
    assert isinstance(results[-1], IsADirectoryError)
    assert sorted(spool.enumerate()) == ["BAD"] and not list(spool.meta_dir.glob("R*.json"))
    spool.path_of("BAD").rmdir()


async def _committed(spool: Spool, *ids: str) -> None:
    for email_id in ids:
        w = spool.new_writer(email_id)
        await w.write(b"Subject: x\r\n\r\nbody\r\n")
        await spool.commit(w, _record(email_id))


def _slow_removals(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Removals wait in their thread until the returned event is set."""
    gate, real = threading.Event(), spool.remove_sync

    def slow(email_id: str, *, has_meta: bool = True) -> None:
        gate.wait(5)
        real(email_id, has_meta=has_meta)

    monkeypatch.setattr(spool, "remove_sync", slow)
    return gate


async def test_a_removal_batch_cut_short_leaves_nobody_waiting(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's task cancelled (the loop shutting down) while its thread runs: its callers and
    those who asked meanwhile are all answered, none waits for a batch that never comes."""
    await _committed(spool, "A", "B")
    gate = _slow_removals(spool, monkeypatch)
    first = asyncio.create_task(spool.remove("A", has_meta=False))
    await asyncio.sleep(0.05)  # A's batch is in its thread
    second = asyncio.create_task(spool.remove("B", has_meta=False))  # waits for the next batch
    await asyncio.sleep(0.05)
    remover = spool._removals._task
    assert remover is not None
    remover.cancel()
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_stop_finishes_removals_in_flight(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop cancels delivery (the caller of remove) but waits for the unlink itself: a delivered
    message's file left behind would be delivered again at the next start."""
    await _committed(spool, "DONE")
    gate = _slow_removals(spool, monkeypatch)
    caller = asyncio.create_task(spool.remove("DONE", has_meta=False))
    await asyncio.sleep(0.05)
    caller.cancel()
    threading.Timer(0.3, gate.set).start()
    await spool.stop()
    assert not spool.path_of("DONE").exists()


async def test_failed_fsync_in_a_batch_fails_only_its_message(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's files are fsync'd together: one refused by the disk (ENOSPC) gets SpoolFull,
    leaves no file behind, and the others of the same batch are committed."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if "BAD" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    async def one(name: str) -> None:
        w = spool.new_writer(name)
        await w.write(b"body\r\n")
        await spool.commit(w, _record(name))

    names = [f"OK{i:02d}" for i in range(20)] + ["BAD"]
    results = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
    assert all(r is None for r in results[:-1])
    assert isinstance(results[-1], SpoolFull)
    assert sorted(spool.enumerate()) == sorted(names[:-1])
    assert not list(spool.tmp_dir.iterdir())


async def test_a_batch_starts_every_write_back_then_fsyncs_each_file(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's write-backs are started together (a hint), and every file is still fsync'd
    itself before its rename: the fsync is what the 250 rests on."""
    calls: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def name(fd: int) -> str:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).split(".")[0]

    def fsync(fd: int) -> None:
        calls.append(("fsync", name(fd)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(spool_batches, "start_writeback", lambda fd: calls.append(("writeback", name(fd))))
    gate = threading.Event()
    spool._batches.jobs.put(spool_batches.Job("append", spool.new_writer("GATE"), b"", lambda exc: gate.wait(5)))

    async def one(n: str) -> None:
        w = spool.new_writer(n)
        await w.write(b"body\r\n")
        await spool.commit(w, _record(n))

    names = [f"M{i}" for i in range(5)]
    tasks = [asyncio.create_task(one(n)) for n in names]
    await asyncio.sleep(0.2)  # all five queued behind the gate: one batch
    gate.set()
    await asyncio.gather(*tasks)
    files = [c for c in calls if c[1] in names]
    assert [c for c in files if c[0] == "writeback"] == [("writeback", n) for n in names]
    assert sorted(n for kind, n in files if kind == "fsync") == names
    assert max(i for i, c in enumerate(files) if c[0] == "writeback") < min(
        i for i, c in enumerate(files) if c[0] == "fsync")
    assert sorted(spool.enumerate()) == names


async def test_a_worker_stages_into_the_queue_and_the_owner_adopts(tmp_path: Path) -> None:
    owner = Spool(tmp_path / "spool")
    await owner.start()
    worker = Spool(tmp_path / "spool", stage_tag="w4242")
    (tmp_path / "spool" / "tmp" / "OTHER.w1.part").write_bytes(b"another worker's")
    await worker.start()  # a worker never purges tmp/: the owner's
    try:
        assert (tmp_path / "spool" / "tmp" / "OTHER.w1.part").exists()
        w = worker.new_writer("ID7")
        await w.write(b"Subject: staged\r\n\r\nbody\r\n")
        name, content = await worker.stage(w, _record("ID7"))
        assert name == "ID7.w4242.part" and (owner.tmp_dir / name).exists()
        assert content == b"Subject: staged\r\n\r\nbody\r\n"
        # durable in queue/ when stage returns (one inode, two names until the owner adopts it)
        assert list(owner.enumerate()) == ["ID7"]
        assert os.stat(owner.path_of("ID7")).st_ino == os.stat(owner.tmp_dir / name).st_ino
        await owner.publish(name, "ID7")
        await wait_for(lambda: not (owner.tmp_dir / name).exists())  # the tmp/ link goes in the background
        assert list(owner.enumerate()) == ["ID7"]
        assert await owner.read_envelope("ID7") == _record("ID7")
        assert await owner.read_content("ID7") == b"Subject: staged\r\n\r\nbody\r\n"
        with pytest.raises(SpoolError):  # only a staged file of that message, inside tmp/
            await owner.publish("../queue/ID7.msg", "ID7")
        assert await owner.purge_worker("w1") == 1 and not list(owner.tmp_dir.iterdir())
    finally:
        await worker.stop()
        await owner.stop()


async def test_a_dead_workers_messages_not_handed_over_leave_the_queue(tmp_path: Path) -> None:
    """What a worker staged (linked into queue/) but the owner never adopted was never answered
    250: the purge after its death removes it from queue/ as well; what was adopted stays, even
    while its tmp/ link is still there."""
    owner = Spool(tmp_path / "spool")
    await owner.start()
    worker = Spool(tmp_path / "spool", stage_tag="w99")
    await worker.start()
    try:
        names = {}
        for email_id in ("ADOPTED", "ORPHAN"):
            w = worker.new_writer(email_id)
            await w.write(b"body\r\n")
            names[email_id], _ = await worker.stage(w, _record(email_id))
        gate = threading.Event()  # the tmp/ link removal of the adopted message is held up
        owner._link_removals = BatchedCalls[str](lambda name: (gate.wait(5), os.unlink(owner.tmp_dir / name))[1])
        await owner.publish(names["ADOPTED"], "ADOPTED")
        assert (owner.tmp_dir / names["ADOPTED"]).exists()  # adopted, its tmp/ link not removed yet
        assert sorted(owner.enumerate()) == ["ADOPTED", "ORPHAN"]
        assert await owner.purge_worker("w99") == 1
        gate.set()
        await owner._link_removals.drain(5)
        assert list(owner.enumerate()) == ["ADOPTED"]
        assert not list(owner.tmp_dir.iterdir())
        assert await owner.read_content("ADOPTED") == b"body\r\n"
    finally:
        await worker.stop()
        await owner.stop()


async def test_the_owners_stop_removes_what_no_worker_handed_over(tmp_path: Path) -> None:
    """A worker stopped or killed at shutdown may leave a staged message its purge did not reach;
    the start-up purge of tmp/ would then lose the only sign that it was never answered 250."""
    owner = Spool(tmp_path / "spool")
    await owner.start()
    worker = Spool(tmp_path / "spool", stage_tag="w7")
    await worker.start()
    names = {}
    for email_id in ("HANDED", "STRANDED"):
        w = worker.new_writer(email_id)
        await w.write(b"body\r\n")
        names[email_id], _ = await worker.stage(w, _record(email_id))
    await worker.stop()
    await owner.publish(names["HANDED"], "HANDED")
    await owner.stop()
    assert list(owner.enumerate()) == ["HANDED"] and not list(owner.tmp_dir.iterdir())


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
