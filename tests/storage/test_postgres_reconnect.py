"""PostgreSQL connection handling when the server goes away (PostgreSQL only: SQLite has no server).

A connection that dies while asyncpg has it checked out is released back to the pool by asyncpg
itself; nothing may run on it afterwards (the log of a black-box fault run showed ``cannot call
Connection.transaction(): connection has been released back to the pool``). Callers get a
StorageError that says the connection was lost, and the same storage works again as soon as the
server is back, without being reopened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from storage import SqlStorage, open_storage
from storage.errors import StorageError
from storage.executor import Op
from storage.queries import Query
from storage.records import MessageRecord, RecipientOutcome, Status, SubmissionRecord
from tests.conftest import _create_pg_database, _drop_pg_database, _pg_dsn_for
from tests.helpers.pg_cluster import PrivatePg

# a job that kills its own backend half-way through a group commit, like a server restart would
KILL_OWN_BACKEND = Query("test.kill_own_backend", "SELECT pg_terminate_backend(pg_backend_pid())", (), True)
NOOP = Query("test.noop", "SELECT 1", (), True)


@pytest.fixture
async def pg_storage(pg_template: str) -> AsyncIterator[SqlStorage]:
    name = await asyncio.to_thread(_create_pg_database, pg_template)
    st = await open_storage(_pg_dsn_for(name))
    try:
        yield st
    finally:
        await st.close()
        await asyncio.to_thread(_drop_pg_database, name)


async def test_a_group_whose_connection_dies_fails_as_connection_lost(pg_storage: SqlStorage) -> None:
    ex = pg_storage.executor
    # both jobs arrive in one loop tick: one group, one transaction, one connection
    results = await asyncio.gather(ex.write_batch([Op(NOOP, [{}])]), ex.write_batch([Op(KILL_OWN_BACKEND, [{}])]),
                                   ex.write_batch([Op(NOOP, [{}])]), return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results), results
    for r in results:
        assert "released back to the pool" not in str(r)
        assert "connection lost" in str(r), r
    # the pool replaced the dead connection: the next group commits
    assert await ex.write_batch([Op(NOOP, [{}])]) == [1]
    assert await pg_storage.accounts.list_accounts() is not None


async def test_a_bad_job_in_a_group_fails_alone(pg_storage: SqlStorage) -> None:
    ex = pg_storage.executor
    bad = Query("test.bad", "SELECT * FROM no_such_table", (), True)
    results = await asyncio.gather(ex.write_batch([Op(NOOP, [{}])]), ex.write_batch([Op(bad, [{}])]),
                                   ex.write_batch([Op(NOOP, [{}])]), return_exceptions=True)
    assert results[0] == [1] and results[2] == [1]
    assert isinstance(results[1], StorageError) and "no_such_table" in str(results[1])


def _submission(i: int, account_id: int) -> SubmissionRecord:
    msg = MessageRecord(email_id=f"E{i:08d}", account_id=account_id, api_user="app1", sender="app@acme.example",
                        subject=f"m{i}", label=None, email_type=None, size=10,
                        request_time=datetime.now(UTC), request_ip="127.0.0.1", node="n1")
    return SubmissionRecord(msg, (RecipientOutcome(f"r{i}@example.com", Status.SENDING),))


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePg]:
    with PrivatePg() as pg:
        yield pg


@pytest.mark.slow
async def test_writes_resume_after_a_server_restart_without_reopening(private_pg: PrivatePg) -> None:
    url = await asyncio.to_thread(private_pg.create_database, f"restart_{int(time.time() * 1000)}")
    st = await open_storage(url)
    try:
        await st.migrate()
        account = await st.accounts.ensure_account("acme")
        written: list[str] = []
        errors: list[str] = []
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            i = w * 1_000_000
            while not stop.is_set():
                i += 1
                try:
                    await st.statuses.record_submissions([_submission(i, account.id)])
                    written.append(f"E{i:08d}")
                except StorageError as e:
                    errors.append(str(e))
                    await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(writer(w)) for w in range(8)]
        try:
            for _ in range(2):
                await asyncio.sleep(0.5)
                before = len(written)
                await asyncio.to_thread(private_pg.restart, 1.0)
                # the same storage object writes again within seconds of the server being back
                deadline = time.monotonic() + 15
                while len(written) <= before + 20:
                    assert time.monotonic() < deadline, f"no writes after the restart; errors: {errors[-5:]}"
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert errors, "the restarts were not noticed: the test proves nothing"
        assert not [e for e in errors if "released back to the pool" in e], errors[:5]
        known = await st.statuses.known_email_ids(written)
        assert set(written) <= known
    finally:
        await st.close()
