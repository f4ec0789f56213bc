"""Intake writes the status rows of messages accepted together in one call, hands each to delivery
only after its rows, and a record the database refuses holds up only itself."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from relay.intake import Intake
from relay.spool import Spool
from storage.errors import StorageError
from storage.records import SubmissionRecord
from tests.unit.test_spool import _record


class _Statuses:
    """Records what was written; refuses every write that contains ``poison``."""

    def __init__(self, poison: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.rows: set[str] = set()
        self.poison = poison

    async def record_submissions(self, batch: Sequence[SubmissionRecord]) -> None:
        ids = [r.message.email_id for r in batch]
        self.calls.append(ids)
        await asyncio.sleep(0.01)  # a database round trip: later messages collect meanwhile
        if self.poison in ids:
            raise StorageError("refused")
        self.rows.update(ids)


@pytest.fixture
async def spool(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Spool(tmp_path / "spool", fsync=False)
    await s.start()
    yield s
    await s.stop()


async def _accept_all(intake: Intake, spool: Spool, ids: list[str]) -> None:
    async def one(email_id: str) -> None:
        w = spool.new_writer(email_id)
        await w.write(b"Subject: x\r\n\r\nbody\r\n")
        await intake.accept(w, _record(email_id))

    await asyncio.gather(*(one(i) for i in ids))


async def test_rows_of_messages_accepted_together_are_written_together(spool: Spool) -> None:
    statuses = _Statuses()
    intake = Intake(spool, statuses)  # type: ignore[arg-type]
    delivered: list[tuple[str, bool]] = []

    async def hook(record: SubmissionRecord) -> None:
        delivered.append((record.message.email_id, record.message.email_id in statuses.rows))

    intake.on_accepted(hook)
    ids = [f"ID{i}" for i in range(20)]
    await _accept_all(intake, spool, ids)
    await intake.flush()
    assert sorted(i for c in statuses.calls for i in c) == sorted(ids)  # each written once
    assert len(statuses.calls) < len(ids)  # in rounds, not one call per message
    assert sorted(delivered) == sorted((i, True) for i in ids)  # every one handed on, after its rows


async def test_a_refused_record_holds_up_only_itself(spool: Spool) -> None:
    statuses = _Statuses(poison="ID3")
    intake = Intake(spool, statuses)  # type: ignore[arg-type]
    delivered: list[str] = []

    async def hook(record: SubmissionRecord) -> None:
        delivered.append(record.message.email_id)

    intake.on_accepted(hook)
    ids = [f"ID{i}" for i in range(8)]
    await _accept_all(intake, spool, ids)
    await _accept_all(intake, spool, ["LATE"])  # accepted while ID3 keeps failing
    await intake.flush(timeout=2.0)
    assert sorted(delivered) == sorted(i for i in [*ids, "LATE"] if i != "ID3")
    assert "ID3" not in statuses.rows and ["ID3"] in statuses.calls  # retried alone, still refused
    for t in list(intake._tasks):
        t.cancel()
