"""Storage conformance for offline exports (both backends): the ExportRepo state machine, the
atomic claim (one winner among concurrent claimers), and the keyset-paged status stream."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from storage import SqlStorage
from storage.records import EmailType, ExportStatus, Status, StatusFilter
from tests.storage.test_conformance import T0, _message, _sub


async def test_export_create_get_list_and_account_scope(storage: SqlStorage) -> None:
    a = (await storage.accounts.ensure_account("acme")).id
    b = (await storage.accounts.ensure_account("beta")).id
    flt = StatusFilter(account_id=a, recipient="x@example.com", statuses=(Status.DELIVERED, Status.INVALID),
                       email_type=EmailType.MARKETING, start=T0, end=T0 + timedelta(days=90))
    t1 = await storage.exports.create("e1", a, "email_status", flt, T0)
    assert (t1.id, t1.account_id, t1.status, t1.filter, t1.created_at) == ("e1", a, ExportStatus.QUEUED, flt, T0)
    assert t1.started_at is None and t1.rows_done == 0 and t1.rows_total is None and t1.attempts == 0
    await storage.exports.create("e2", a, "email_status", StatusFilter(account_id=a), T0 + timedelta(seconds=1))
    await storage.exports.create("e3", b, "email_status", StatusFilter(account_id=b), T0 + timedelta(seconds=2))
    assert await storage.exports.get("e1", a) == t1
    assert await storage.exports.get("e1", b) is None  # another account's task does not exist for B
    assert await storage.exports.get("nope") is None
    page = await storage.exports.list(a)
    assert [t.id for t in page.items] == ["e2", "e1"] and page.total == 2
    page = await storage.exports.list(a, offset=1, limit=1)
    assert [t.id for t in page.items] == ["e1"] and page.total == 2
    assert (await storage.exports.list(None)).total == 3


async def test_export_lifecycle_claim_progress_finish_fail_retry(storage: SqlStorage) -> None:
    a = (await storage.accounts.ensure_account("acme")).id
    ex = storage.exports
    await ex.create("e1", a, "email_status", StatusFilter(account_id=a), T0)
    await ex.create("e2", a, "email_status", StatusFilter(account_id=a), T0 + timedelta(seconds=1))
    got = await ex.claim("node-a", T0 + timedelta(minutes=1))
    assert got is not None and got.id == "e1" and got.status is ExportStatus.RUNNING  # oldest first
    assert got.node == "node-a" and got.attempts == 1 and got.started_at == T0 + timedelta(minutes=1)
    assert await ex.progress("e1", "node-a", 10, 100)
    assert not await ex.progress("e1", "node-b", 20, 100)  # not that node's task
    t = await ex.get("e1")
    assert t is not None and (t.rows_done, t.rows_total) == (10, 100)
    assert await ex.finish("e1", "node-a", T0 + timedelta(minutes=2), 100, 4096)
    t = await ex.get("e1")
    assert t is not None and t.status is ExportStatus.SUCCEEDED and (t.rows_done, t.rows_total, t.file_size) == (
        100, 100, 4096) and t.finished_at == T0 + timedelta(minutes=2)
    assert not await ex.fail("e1", "node-a", T0, "late")  # a finished task stays finished
    assert not await ex.retry("e1")  # only failed tasks are retried

    e2 = await ex.claim("node-b", T0 + timedelta(minutes=3))
    assert e2 is not None and e2.id == "e2"
    assert await ex.claim("node-a", T0) is None  # nothing queued
    assert await ex.fail("e2", "node-b", T0 + timedelta(minutes=4), "disk full")
    t = await ex.get("e2")
    assert t is not None and t.status is ExportStatus.FAILED and t.error == "disk full"
    assert await ex.retry("e2")
    t = await ex.get("e2")
    assert t is not None and t.status is ExportStatus.QUEUED and t.error == "" and t.node == "" and t.rows_done == 0
    again = await ex.claim("node-a", T0 + timedelta(minutes=5))
    assert again is not None and again.id == "e2" and again.attempts == 2


async def test_export_start_up_recovery_and_expiry(storage: SqlStorage) -> None:
    a = (await storage.accounts.ensure_account("acme")).id
    ex = storage.exports
    for i in range(3):
        await ex.create(f"e{i}", a, "email_status", StatusFilter(account_id=a), T0 + timedelta(seconds=i))
    assert (await ex.claim("node-a", T0)) is not None
    assert (await ex.claim("node-b", T0)) is not None
    assert await ex.fail_running("node-a", T0 + timedelta(hours=1), "interrupted by a restart") == 1
    e0, e1 = await ex.get("e0"), await ex.get("e1")
    assert e0 is not None and e0.status is ExportStatus.FAILED and "restart" in e0.error
    assert e1 is not None and e1.status is ExportStatus.RUNNING  # node-b's task is node-b's business
    assert await ex.finish("e1", "node-b", T0, 0, 20)
    assert await ex.expired("node-b", T0 + timedelta(days=7)) != []
    assert await ex.expired("node-b", T0) == []  # finished_at < before, strictly
    assert await ex.expired("node-a", T0 + timedelta(days=7)) == []  # the file is on node-b
    assert await ex.mark_expired("e1", T0 + timedelta(days=8))
    assert not await ex.mark_expired("e1", T0 + timedelta(days=9))
    e1 = await ex.get("e1")
    assert e1 is not None and e1.expired_at == T0 + timedelta(days=8) and e1.status is ExportStatus.SUCCEEDED
    assert await ex.expired("node-b", T0 + timedelta(days=30)) == []


async def test_export_claim_is_atomic_under_concurrency(storage: SqlStorage) -> None:
    a = (await storage.accounts.ensure_account("acme")).id
    for i in range(5):
        await storage.exports.create(f"e{i}", a, "email_status", StatusFilter(account_id=a), T0 + timedelta(seconds=i))
    claims = await asyncio.gather(*(storage.exports.claim(f"node-{i % 3}", T0) for i in range(20)))
    won = [c.id for c in claims if c is not None]
    assert sorted(won) == [f"e{i}" for i in range(5)]  # each task exactly once


async def test_status_stream_keyset_chunks(storage: SqlStorage) -> None:
    a = (await storage.accounts.ensure_account("acme")).id
    b = (await storage.accounts.ensure_account("beta")).id
    subs = []
    for i in range(23):  # several messages share one request_time: the keyset must break ties
        at = T0 + timedelta(minutes=i // 4)
        subs.append(_sub(_message(f"m{i:02d}", a, request_time=at), f"r1-{i}@x.com", f"r2-{i}@y.com"))
    subs.append(_sub(_message("other", b), "r@x.com"))
    await storage.statuses.record_submissions(subs)
    flt = StatusFilter(account_id=a)
    assert await storage.statuses.count(flt) == 46
    chunks = [c async for c in storage.statuses.stream(flt, chunk=5)]
    assert [len(c) for c in chunks] == [5] * 9 + [1]
    keys = [(r.request_time, r.email_id, r.recipient) for c in chunks for r in c]
    assert len(set(keys)) == 46 and keys == sorted(keys, reverse=True)
    assert all(r.log and r.account_id == a for c in chunks for r in c)
    narrow = StatusFilter(account_id=a, domain="y.com", start=T0 + timedelta(minutes=2))
    got = [r async for c in storage.statuses.stream(narrow, chunk=4, with_log=False) for r in c]
    assert len(got) == await storage.statuses.count(narrow) == 15  # minutes 2..5: messages 8..22
    assert all(r.domain == "y.com" and r.log == () for r in got)
    assert [c async for c in storage.statuses.stream(StatusFilter(account_id=a, label="none"))] == []
