"""Two mailrelay nodes, each with its own data directory and spool, sharing one PostgreSQL.

A suppression entry made through one node takes effect on the other's next RCPT at once (lookups
read the shared tables; there is no per-node cache to invalidate), a status search on either
node sees the mail both accepted, and each export task runs on exactly one node although both
nodes' workers poll the same queue.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.records import EXPORT_EMAIL_STATUS, ExportStatus, ListKind, StatusFilter, SuppressionEntry, utcnow
from tests.integration.conftest import _create_pg_database, _drop_pg_database
from tests.integration.relay_fixture import RelayUnderTest, start_relay, wait_until


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[RelayUnderTest, RelayUnderTest]]:
    name, url = await _create_pg_database()
    a = await start_relay(tmp_path / "node-a", url, overrides={"node.name": "node-a"}, implicit_tls=False)
    b = await start_relay(tmp_path / "node-b", url, overrides={"node.name": "node-b"}, implicit_tls=False,
                          create_user=False)
    try:
        yield a, b
    finally:
        await a.app.stop(grace=2)
        await b.app.stop(grace=2)
        await _drop_pg_database(name)


async def _rcpt(node: RelayUnderTest, rcpt: str) -> tuple[int, str]:
    c = await node.client()
    await c.mail("app@acme.example")
    r = await c.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
    await c.rset()
    await c.quit()
    return r.code, r.message


async def test_entries_made_on_one_node_apply_on_the_other(nodes: tuple[RelayUnderTest, RelayUnderTest]) -> None:
    a, b = nodes
    assert a.account_id == b.account_id and a.key == b.key  # one account, one API user, shared
    assert await _rcpt(b, "x@example.com") == (250, "2.1.5 Ok")
    await a.storage.suppressions.add([SuppressionEntry(account_id=a.account_id, kind=ListKind.COMPLAINT,
                                                       value="x@example.com")])
    assert await _rcpt(b, "x@example.com") == (550, "5.7.1 Blacklist:complaint (worker:address in complaint list)")
    await a.storage.suppressions.add([SuppressionEntry(account_id=a.account_id, kind=ListKind.NO_INTERCEPTION,
                                                       value="x@example.com")])
    assert await _rcpt(b, "x@example.com") == (250, "2.1.5 Ok")


async def test_status_search_sees_mail_from_both_nodes(nodes: tuple[RelayUnderTest, RelayUnderTest]) -> None:
    a, b = nodes
    for node, rcpt in ((a, "via-a@example.com"), (b, "via-b@example.com")):
        c = await node.client()
        await c.sendmail("app@acme.example", [rcpt], "Subject: multi\r\n\r\nhi\r\n")
        await c.quit()
        assert node.app.intake is not None
        await node.app.intake.flush()
    for node in (a, b):
        page = await node.storage.statuses.search(StatusFilter(account_id=a.account_id))
        assert {r.recipient for r in page.items} == {"via-a@example.com", "via-b@example.com"}
    assert a.app.spool is not None and b.app.spool is not None
    assert len(list(a.app.spool.enumerate())) == 1 and len(list(b.app.spool.enumerate())) == 1  # own spools


async def test_each_export_runs_on_exactly_one_node(nodes: tuple[RelayUnderTest, RelayUnderTest]) -> None:
    a, b = nodes
    for node, i in ((a, 0), (b, 1)):
        c = await node.client()
        await c.sendmail("app@acme.example", [f"r{i}@example.com"], "Subject: x\r\n\r\nhi\r\n")
        await c.quit()
        assert node.app.intake is not None
        await node.app.intake.flush()
    flt = StatusFilter(account_id=a.account_id)
    ids = [f"exp{i:02d}" for i in range(12)]
    for task_id in ids:
        await a.storage.exports.create(task_id, a.account_id, EXPORT_EMAIL_STATUS, flt, utcnow())
    assert a.app.exports is not None and b.app.exports is not None
    a.app.exports.wake()
    b.app.exports.wake()  # both workers race for the same queued rows

    async def all_done() -> bool:
        tasks = [await a.storage.exports.get(t) for t in ids]
        return all(t is not None and t.status is ExportStatus.SUCCEEDED for t in tasks)

    await wait_until(all_done, timeout=20)
    dirs = {"node-a": a.app.exports.directory, "node-b": b.app.exports.directory}
    for task_id in ids:
        task = await b.storage.exports.get(task_id)
        assert task is not None and task.attempts == 1 and task.node in dirs, task  # claimed once, ran once
        other = next(n for n in dirs if n != task.node)
        assert not (dirs[other] / f"{task_id}.csv.gz").exists()
        lines = gzip.decompress((dirs[task.node] / f"{task_id}.csv.gz").read_bytes()).decode().splitlines()
        assert len(lines) == 3  # header + the mail of both nodes
