"""The storage conformance suite: every test runs on SQLite AND PostgreSQL (fixture ``storage``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from storage import SqlStorage, open_storage
from storage.errors import Conflict, StorageError
from storage.migrate import MigrationError, load_migrations
from storage.records import (
    ALL_API_USERS,
    EmailType,
    ListKind,
    LogEntry,
    LogKind,
    MessageRecord,
    RecipientOutcome,
    StatsCount,
    StatsFilter,
    Status,
    StatusFilter,
    StatusKey,
    SubmissionRecord,
    SubStatus,
    SuppressionEntry,
)
from storage.repos import SqlSuppressionRepo
from storage.status_repos import SqlStatusRepo

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ms = timedelta(milliseconds=1)


# ---------------------------------------------------------------- migrations


async def test_migrate_from_zero(empty_storage_url: str) -> None:
    st = await open_storage(empty_storage_url)
    try:
        state = await st.schema_state()
        assert state.current == 0 and state.latest >= 1 and state.behind
        applied = await st.migrate()
        # every shipped version, in order (numbers need not be contiguous: branches add them in parallel)
        assert applied == [m.version for m in load_migrations(st.dialect)] and applied[-1] == state.latest
        after = await st.schema_state()
        assert after.current == after.latest and not after.behind
        assert await st.migrate() == []  # nothing left to apply
        assert (await st.require_current_schema()).current == after.latest
        # the schema is usable
        acct = await st.accounts.ensure_account("acme")
        assert (await st.accounts.get_account("acme")) == acct
    finally:
        await st.close()


async def test_changed_migration_is_an_error(storage: SqlStorage) -> None:
    await storage.executor.execute_script("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await storage.schema_state()
    with pytest.raises(MigrationError):
        await storage.migrate()


async def test_transaction_commits_and_rolls_back(storage: SqlStorage) -> None:
    ex = storage.executor
    async with ex.transaction() as tx:
        await tx.fetchrow("account.ensure", {"name": "kept", "created_at": 1})
        inside = await tx.fetchrow("account.get_by_name", {"name": "kept"})
        assert inside is not None and inside["name"] == "kept"
    with pytest.raises(RuntimeError):
        async with ex.transaction() as tx:
            await tx.fetchrow("account.ensure", {"name": "gone", "created_at": 1})
            raise RuntimeError("boom")
    assert await storage.accounts.get_account("kept") is not None
    assert await storage.accounts.get_account("gone") is None


# ---------------------------------------------------------------- accounts and API users


async def test_accounts_and_api_users(storage: SqlStorage) -> None:
    acc = storage.accounts
    a = await acc.ensure_account("acme")
    assert (await acc.ensure_account("acme")).id == a.id  # idempotent
    b = await acc.ensure_account("globex")
    assert a.id != b.id
    assert await acc.get_account_by_id(b.id) == b
    assert await acc.get_account("nope") is None
    assert [x.name for x in await acc.list_accounts()] == ["acme", "globex"]

    u = await acc.add_api_user("acme_tx", a.id, "scrypt$hash1")
    assert (u.name, u.account_id, u.account_name, u.key_hash, u.active) == (
        "acme_tx",
        a.id,
        "acme",
        "scrypt$hash1",
        True,
    )
    await acc.add_api_user("acme_mk", a.id, "scrypt$hash2")
    await acc.add_api_user("globex_1", b.id, "scrypt$hash3")
    with pytest.raises(Conflict):
        await acc.add_api_user("acme_tx", b.id, "other")
    assert (await acc.get_api_user("acme_tx")).key_hash == "scrypt$hash1"  # type: ignore[union-attr]

    assert [x.name for x in await acc.list_api_users(a.id)] == ["acme_mk", "acme_tx"]
    assert {x.name for x in await acc.list_api_users()} == {"acme_mk", "acme_tx", "globex_1"}

    at = T0 + timedelta(days=1)
    assert await acc.revoke_api_user("acme_tx", at) is True
    assert await acc.revoke_api_user("acme_tx", at) is False  # already revoked
    assert await acc.revoke_api_user("ghost", at) is False
    revoked = await acc.get_api_user("acme_tx")
    assert revoked is not None and revoked.revoked_at == at and not revoked.active
    with pytest.raises(Conflict):  # a revoked name is not reusable
        await acc.add_api_user("acme_tx", a.id, "again")


async def test_api_user_key_change_and_revoke_are_what_auth_reads(storage: SqlStorage) -> None:
    """The authenticator trusts a cached key check only while get_api_user shows the user active
    with the hash the key matched: a key change and a revoke must both show there at once."""
    acc = storage.accounts
    a = await acc.ensure_account("acme")
    await acc.add_api_user("u1", a.id, "scrypt$old")
    assert await acc.replace_api_user_key("u1", "scrypt$new") is True
    u = await acc.get_api_user("u1")
    assert u is not None and u.key_hash == "scrypt$new" and u.active
    assert await acc.replace_api_user_key("ghost", "scrypt$x") is False
    assert await acc.revoke_api_user("u1", T0) is True
    assert await acc.replace_api_user_key("u1", "scrypt$again") is False  # a revoked user stays revoked
    u = await acc.get_api_user("u1")
    assert u is not None and u.key_hash == "scrypt$new" and not u.active


# ---------------------------------------------------------------- suppression lists


@pytest.mark.parametrize("kind", list(ListKind))
async def test_list_add_list_page_remove(storage: SqlStorage, kind: ListKind) -> None:
    sup = storage.suppressions
    acct = (await storage.accounts.ensure_account("acme")).id
    other = (await storage.accounts.ensure_account("other")).id
    entries = [
        SuppressionEntry(acct, kind, f"User{i:02d}@Example.com", created_at=T0 + i * timedelta(minutes=1))
        for i in range(25)
    ]
    assert await sup.add(entries) == 25
    await sup.add([SuppressionEntry(other, kind, "user00@example.com", created_at=T0)])

    first = await sup.list(acct, kind, limit=10)
    assert first.total == 25
    assert [e.value for e in first.items] == [f"user{i:02d}@example.com" for i in range(24, 14, -1)]
    assert all(e.kind == kind and e.account_id == acct and e.api_user == ALL_API_USERS for e in first.items)
    assert first.items[0].created_at == T0 + 24 * timedelta(minutes=1)
    mid = await sup.list(acct, kind, offset=10, limit=10)
    assert (mid.total, len(mid.items)) == (25, 10)
    last = await sup.list(acct, kind, offset=20, limit=10)
    assert last.total == 25 and [e.value for e in last.items][-1] == "user00@example.com"
    beyond = await sup.list(acct, kind, offset=30, limit=10)
    assert beyond.items == [] and beyond.total == 25

    window = await sup.list(acct, kind, start=T0 + timedelta(minutes=5), end=T0 + timedelta(minutes=8))
    assert [e.value for e in window.items] == ["user07@example.com", "user06@example.com", "user05@example.com"]
    one = await sup.list(acct, kind, value="USER03@example.com")
    assert one.total == 1 and one.items[0].value == "user03@example.com"
    assert (await sup.list(acct, ListKind.BOUNCE if kind != ListKind.BOUNCE else ListKind.BLOCK)).total == 0

    # upsert: same key gets the new times/reason, no duplicate row
    await sup.add([SuppressionEntry(acct, kind, "user03@example.com", created_at=T0, reason="re-added")])
    again = await sup.list(acct, kind, value="user03@example.com")
    assert again.total == 1 and again.items[0].reason == "re-added" and again.items[0].created_at == T0

    assert await sup.remove(acct, kind, ["user01@example.com", "USER02@example.com", "absent@x.com"]) == 2
    assert (await sup.list(acct, kind)).total == 23
    assert (await sup.list(other, kind)).total == 1  # other account untouched


async def test_list_expiry_and_fields(storage: SqlStorage) -> None:
    sup = storage.suppressions
    acct = (await storage.accounts.ensure_account("acme")).id
    e = SuppressionEntry(
        acct,
        ListKind.UNSUBSCRIBE,
        "a@x.com",
        api_user="acme_tx",
        created_at=T0,
        expires_at=T0 + timedelta(days=3),
        hit_count=1,
        reason_code=2,
        reason="This is spam",
    )
    await sup.add([e])
    got = (await sup.list(acct, ListKind.UNSUBSCRIBE)).items
    assert got == [e]
    # expired entries are still listed (with their expiry) but no longer match
    assert (await sup.hits(acct, "acme_tx", "a@x.com", "x.com", T0 + timedelta(days=1))).unsubscribe
    assert not (await sup.hits(acct, "acme_tx", "a@x.com", "x.com", T0 + timedelta(days=3))).unsubscribe
    assert (await sup.list(acct, ListKind.UNSUBSCRIBE)).total == 1


async def test_hits_address_vs_domain(storage: SqlStorage) -> None:
    sup = storage.suppressions
    acct = (await storage.accounts.ensure_account("acme")).id
    await sup.add(
        [
            SuppressionEntry(acct, ListKind.BLOCK, "blocked.com", created_at=T0),
            SuppressionEntry(acct, ListKind.NO_INTERCEPTION, "vip.com", created_at=T0),
            SuppressionEntry(acct, ListKind.COMPLAINT, "angry.com", created_at=T0),  # domain: not honoured
            SuppressionEntry(acct, ListKind.UNSUBSCRIBE, "gone.com", created_at=T0),  # domain: not honoured
            SuppressionEntry(acct, ListKind.COMPLAINT, "c@x.com", created_at=T0),
            SuppressionEntry(acct, ListKind.BLOCK, "b@x.com", created_at=T0),
            SuppressionEntry(acct, ListKind.UNSUBSCRIBE, "u@x.com", created_at=T0),
            SuppressionEntry(acct, ListKind.NO_INTERCEPTION, "n@x.com", created_at=T0),
            SuppressionEntry(acct, ListKind.BOUNCE, "d@x.com", created_at=T0, expires_at=T0 + timedelta(days=30)),
        ]
    )
    now = T0 + timedelta(hours=1)

    async def h(addr: str) -> tuple[bool, bool, bool, datetime | None, bool]:
        r = await sup.hits(acct, "acme_tx", addr, addr.rpartition("@")[2], now)
        return (r.no_interception, r.complaint, r.block, r.bounce_until, r.unsubscribe)

    assert await h("anyone@blocked.com") == (False, False, True, None, False)
    assert await h("anyone@vip.com") == (True, False, False, None, False)
    assert await h("anyone@angry.com") == (False, False, False, None, False)
    assert await h("anyone@gone.com") == (False, False, False, None, False)
    assert await h("c@x.com") == (False, True, False, None, False)
    assert await h("b@x.com") == (False, False, True, None, False)
    assert await h("u@x.com") == (False, False, False, None, True)
    assert await h("n@x.com") == (True, False, False, None, False)
    assert await h("d@x.com") == (False, False, False, T0 + timedelta(days=30), False)
    assert await h("clean@x.com") == (False, False, False, None, False)
    # other account sees nothing
    other = (await storage.accounts.ensure_account("other")).id
    assert await sup.hits(other, "x", "c@x.com", "x.com", now) == await sup.hits(
        other, "x", "clean@x.com", "x.com", now
    )
    assert not (await sup.hits(other, "x", "a@blocked.com", "blocked.com", now)).block


async def test_hits_api_user_scope_and_expiry(storage: SqlStorage) -> None:
    sup = storage.suppressions
    acct = (await storage.accounts.ensure_account("acme")).id
    await sup.add(
        [
            SuppressionEntry(acct, ListKind.BLOCK, "one@x.com", api_user="u1", created_at=T0),
            SuppressionEntry(acct, ListKind.BLOCK, "all@x.com", api_user=ALL_API_USERS, created_at=T0),
            SuppressionEntry(acct, ListKind.NO_INTERCEPTION, "d1.com", api_user="u1", created_at=T0),
            SuppressionEntry(acct, ListKind.BLOCK, "soon@x.com", created_at=T0, expires_at=T0 + timedelta(hours=1)),
        ]
    )
    now = T0 + timedelta(minutes=1)
    assert (await sup.hits(acct, "u1", "one@x.com", "x.com", now)).block
    assert not (await sup.hits(acct, "u2", "one@x.com", "x.com", now)).block
    assert (await sup.hits(acct, "u1", "all@x.com", "x.com", now)).block
    assert (await sup.hits(acct, "u2", "all@x.com", "x.com", now)).block
    assert (await sup.hits(acct, "u1", "z@d1.com", "d1.com", now)).no_interception
    assert not (await sup.hits(acct, "u2", "z@d1.com", "d1.com", now)).no_interception
    # expiry boundary: expires_at <= now does not match
    exp = T0 + timedelta(hours=1)
    assert (await sup.hits(acct, "u1", "soon@x.com", "x.com", exp - ms)).block
    assert not (await sup.hits(acct, "u1", "soon@x.com", "x.com", exp)).block
    assert not (await sup.hits(acct, "u1", "soon@x.com", "x.com", exp + ms)).block

    # remove one scope vs every scope
    await sup.add([SuppressionEntry(acct, ListKind.BLOCK, "one@x.com", api_user="u2", created_at=T0)])
    assert await sup.remove(acct, ListKind.BLOCK, ["one@x.com"], api_user="u1") == 1
    assert not (await sup.hits(acct, "u1", "one@x.com", "x.com", now)).block
    assert (await sup.hits(acct, "u2", "one@x.com", "x.com", now)).block
    await sup.add([SuppressionEntry(acct, ListKind.BLOCK, "one@x.com", api_user="u1", created_at=T0)])
    assert await sup.remove(acct, ListKind.BLOCK, ["one@x.com"]) == 2


async def test_bounce_until_is_max_unexpired(storage: SqlStorage) -> None:
    sup = storage.suppressions
    acct = (await storage.accounts.ensure_account("acme")).id
    await sup.add(
        [
            SuppressionEntry(acct, ListKind.BOUNCE, "b@x.com", api_user="u1", expires_at=T0 + timedelta(days=5)),
            SuppressionEntry(acct, ListKind.BOUNCE, "b@x.com", api_user="all", expires_at=T0 + timedelta(days=2)),
        ]
    )
    assert (await sup.hits(acct, "u1", "b@x.com", "x.com", T0)).bounce_until == T0 + timedelta(days=5)
    assert (await sup.hits(acct, "u2", "b@x.com", "x.com", T0)).bounce_until == T0 + timedelta(days=2)
    later = T0 + timedelta(days=3)
    assert (await sup.hits(acct, "u2", "b@x.com", "x.com", later)).bounce_until is None


async def test_report_not_exist_increments(storage: SqlStorage) -> None:
    sup = storage.suppressions
    acct = (await storage.accounts.ensure_account("acme")).id
    seen: list[int] = []

    def expiry_for(n: int) -> timedelta:
        seen.append(n)
        return timedelta(days={1: 30, 2: 60}.get(n, 180))

    for n, days in [(1, 30), (2, 60), (3, 180), (4, 180)]:
        now = T0 + timedelta(days=n)
        e = await sup.report_not_exist(acct, "Gone@X.com", now, expiry_for, reason="550 5.1.1 user unknown")
        assert (e.kind, e.value, e.api_user, e.hit_count) == (ListKind.BOUNCE, "gone@x.com", ALL_API_USERS, n)
        assert e.expires_at == now + timedelta(days=days)
        assert e.reason == "550 5.1.1 user unknown"
        assert (await sup.hits(acct, "u", "gone@x.com", "x.com", now)).bounce_until == now + timedelta(days=days)
    assert seen == [1, 2, 3, 4]
    page = await sup.list(acct, ListKind.BOUNCE)
    assert page.total == 1 and page.items[0].hit_count == 4

    # concurrent reports of one address: none lost
    results = await asyncio.gather(
        *(sup.report_not_exist(acct, "race@x.com", T0, lambda n: timedelta(days=n)) for _ in range(10))
    )
    assert sorted(r.hit_count for r in results) == list(range(1, 11))
    final = (await sup.list(acct, ListKind.BOUNCE, value="race@x.com")).items[0]
    assert final.hit_count == 10 and final.expires_at == T0 + timedelta(days=10)


async def test_import_entries_100k(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    total = 100_000
    chunk = 10_000
    started = time.perf_counter()
    for base in range(0, total, chunk):
        batch = [
            SuppressionEntry(acct, ListKind.BLOCK, f"user{i}@bulk{i % 97}.example", created_at=T0)
            for i in range(base, base + chunk)
        ]
        assert await storage.suppressions.import_entries(batch) == chunk
    elapsed = time.perf_counter() - started
    print(f"\n[{storage.dialect}] import_entries: {total} rows in {elapsed:.2f}s ({total / elapsed:,.0f}/s)")
    exact = SqlSuppressionRepo(storage.executor, count_cap=None)
    assert (await exact.list(acct, ListKind.BLOCK, limit=1)).total == total
    # default repo caps the count
    assert (await storage.suppressions.list(acct, ListKind.BLOCK, limit=1)).total == 10_000
    # re-import is an upsert (no duplicates), including duplicates inside one chunk
    dup = [SuppressionEntry(acct, ListKind.BLOCK, "user5@bulk5.example", reason=f"r{i}") for i in range(3)]
    assert await storage.suppressions.import_entries(dup) == 1
    assert (await exact.list(acct, ListKind.BLOCK, limit=1)).total == total
    row = (await exact.list(acct, ListKind.BLOCK, value="user5@bulk5.example")).items[0]
    assert row.reason == "r2"
    hit = await storage.suppressions.hits(
        acct, "u", f"user99999@bulk{99999 % 97}.example", f"bulk{99999 % 97}.example", T0
    )
    assert hit.block
    assert elapsed < 60


# ---------------------------------------------------------------- statuses


def _message(email_id: str, account_id: int, **kw: object) -> MessageRecord:
    base: dict[str, object] = {
        "email_id": email_id,
        "account_id": account_id,
        "api_user": "u1",
        "sender": "news@shop.example",
        "subject": f"subject {email_id}",
        "label": None,
        "email_type": None,
        "size": 1234,
        "request_time": T0,
        "request_ip": "192.0.2.10",
        "node": "node-a",
    }
    base.update(kw)
    return MessageRecord(**base)  # type: ignore[arg-type]


def _sub(msg: MessageRecord, *rcpts: str) -> SubmissionRecord:
    return SubmissionRecord(msg, tuple(RecipientOutcome(r, Status.SENDING) for r in rcpts))


async def test_record_submissions_batch_and_idempotent(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    batch = [
        _sub(_message(f"m{i:04d}", acct, request_time=T0 + i * ms), f"a{i}@x.com", f"b{i}@y.com", f"C{i}@Z.com")
        for i in range(200)
    ]
    intercepted = SubmissionRecord(
        _message("m-int", acct),
        (
            RecipientOutcome("ok@x.com", Status.SENDING),
            RecipientOutcome(
                "bad@x.com",
                Status.INVALID,
                SubStatus.BLACKLIST,
                "Blacklist:complaint (worker:address in complaint list)",
                rule="complaint",
            ),
        ),
    )
    await storage.statuses.record_submissions([*batch, intercepted])
    page = await storage.statuses.search(StatusFilter(account_id=acct), limit=1000)
    assert page.total == 602 and len(page.items) == 602
    assert await storage.statuses.known_email_ids(["m0000", "m0199", "nope"]) == {"m0000", "m0199"}

    rec = next(r for r in page.items if r.recipient == "c7@z.com")
    assert (rec.email_id, rec.domain, rec.status, rec.sub_status, rec.api_user) == (
        "m0007",
        "z.com",
        Status.SENDING,
        None,
        "u1",
    )
    assert (rec.subject, rec.request_ip, rec.request_time, rec.sender) == (
        "subject m0007",
        "192.0.2.10",
        T0 + 7 * ms,
        "news@shop.example",
    )
    assert [x.kind for x in rec.log] == [LogKind.ACCEPTED]
    bad = next(r for r in page.items if r.recipient == "bad@x.com")
    assert (bad.status, bad.sub_status) == (Status.INVALID, SubStatus.BLACKLIST)
    assert bad.reason == "Blacklist:complaint (worker:address in complaint list)"
    assert [(x.kind, x.rule, x.text) for x in bad.log] == [(LogKind.POLICY, "complaint", bad.reason)]

    # idempotent: re-recording changes nothing and adds no log lines
    await storage.statuses.record_submissions([*batch[:50], intercepted])
    again = await storage.statuses.search(StatusFilter(account_id=acct), limit=1000)
    assert again.total == 602
    assert all(len(r.log) == 1 for r in again.items)


async def test_record_submissions_concurrent_callers(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    calls = [storage.statuses.record_submissions([_sub(_message(f"c{i}", acct), f"r{i}@x.com")]) for i in range(60)]
    # one bad job (NOT NULL violation) fails only its own caller
    bad = _message("bad", acct, subject=None)
    calls.insert(30, storage.statuses.record_submissions([_sub(bad, "bad@x.com")]))
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], StorageError)
    assert results[30] is errors[0]
    page = await storage.statuses.search(StatusFilter(account_id=acct), limit=100)
    assert page.total == 60
    assert {r.email_id for r in page.items} == {f"c{i}" for i in range(60)}
    assert await storage.statuses.known_email_ids(["bad"]) == set()


async def test_concurrent_writes_are_group_committed(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    before = (storage.executor.stats.jobs, storage.executor.stats.commits)
    await asyncio.gather(
        *(storage.statuses.record_submissions([_sub(_message(f"g{i}", acct), f"r{i}@x.com")]) for i in range(100))
    )
    jobs = storage.executor.stats.jobs - before[0]
    commits = storage.executor.stats.commits - before[1]
    assert jobs == 100
    assert commits <= 10, f"{commits} commits for 100 concurrent callers"
    assert (await storage.statuses.search(StatusFilter(account_id=acct), limit=1)).total == 100


async def test_concurrent_duplicates_are_idempotent(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    same = _sub(_message("dup", acct), "a@x.com", "b@x.com")
    await asyncio.gather(*(storage.statuses.record_submissions([same]) for _ in range(5)))
    recs = await storage.statuses.get_message("dup")
    assert [(r.recipient, len(r.log)) for r in recs] == [("a@x.com", 1), ("b@x.com", 1)]
    # concurrent upserts of one suppression key (same statement would hit it twice): all succeed
    entries = [SuppressionEntry(acct, ListKind.BLOCK, "k@x.com", reason=f"r{i}", created_at=T0) for i in range(5)]
    assert await asyncio.gather(*(storage.suppressions.add([e]) for e in entries)) == [1] * 5
    page = await storage.suppressions.list(acct, ListKind.BLOCK)
    assert page.total == 1 and page.items[0].reason in {f"r{i}" for i in range(5)}


async def _search_dataset(storage: SqlStorage) -> tuple[int, int, list[SubmissionRecord]]:
    a = (await storage.accounts.ensure_account("acme")).id
    b = (await storage.accounts.ensure_account("globex")).id
    subs: list[SubmissionRecord] = []
    for i in range(40):
        msg = _message(
            f"e{i:03d}",
            a if i % 4 else b,
            api_user="u1" if i % 3 else "u2",
            label="promo" if i % 5 == 0 else None,
            email_type=EmailType.MARKETING if i % 2 else EmailType.TRANSACTIONAL,
            request_time=T0 + i * timedelta(hours=6),
        )
        outcomes = [RecipientOutcome(f"p{i}@gmail.example", Status.SENDING)]
        if i % 7 == 0:
            outcomes.append(RecipientOutcome(f"q{i}@qq.example", Status.INVALID, SubStatus.UNSUBSCRIBE, "unsubscribe"))
        subs.append(SubmissionRecord(msg, tuple(outcomes)))
    await storage.statuses.record_submissions(subs)
    return a, b, subs


async def test_search_filters_paging_total(storage: SqlStorage) -> None:
    a, b, subs = await _search_dataset(storage)
    rows = [(s.message, r) for s in subs for r in s.recipients]

    async def ids(flt: StatusFilter) -> list[tuple[str, str]]:
        page = await storage.statuses.search(flt, limit=500, with_log=False)
        assert page.total == len(page.items)
        return [(r.email_id, r.recipient) for r in page.items]

    def expect(pred: Callable[[MessageRecord, RecipientOutcome], bool]) -> list[tuple[str, str]]:
        sel = [(m, r.recipient.lower()) for m, r in rows if pred(m, r)]
        sel.sort(key=lambda x: (x[0].request_time, x[0].email_id, x[1]), reverse=True)  # newest first
        return [(m.email_id, rcpt) for m, rcpt in sel]

    assert await ids(StatusFilter(account_id=a)) == expect(lambda m, r: m.account_id == a)
    assert await ids(StatusFilter(account_id=b)) == expect(lambda m, r: m.account_id == b)
    assert await ids(StatusFilter()) == expect(lambda m, r: True)  # operator: all accounts
    assert await ids(StatusFilter(account_id=a, recipient="P5@gmail.example")) == [("e005", "p5@gmail.example")]
    assert await ids(StatusFilter(account_id=b, recipient="p5@gmail.example")) == []
    assert await ids(StatusFilter(email_ids=("e007", "e014"))) == expect(lambda m, r: m.email_id in ("e007", "e014"))
    # per-recipient ids (EMAIL_ID$recipient): exactly those pairs, alone, several, and with whole messages
    assert await ids(StatusFilter(recipient_ids=(("e007", "Q7@qq.example"),))) == [("e007", "q7@qq.example")]
    assert await ids(StatusFilter(recipient_ids=(("e007", "p7@gmail.example"), ("e014", "q14@qq.example")))) == [
        ("e014", "q14@qq.example"), ("e007", "p7@gmail.example")]
    assert await ids(StatusFilter(recipient_ids=(("e007", "q14@qq.example"),))) == []  # never a cross pair
    assert await ids(StatusFilter(email_ids=("e021",), recipient_ids=(("e007", "q7@qq.example"),))) == expect(
        lambda m, r: m.email_id == "e021" or (m.email_id, r.recipient) == ("e007", "q7@qq.example"))
    assert await ids(StatusFilter(account_id=a, api_user="u2")) == expect(
        lambda m, r: m.account_id == a and m.api_user == "u2"
    )
    assert await ids(StatusFilter(account_id=a, domain="QQ.example")) == expect(
        lambda m, r: m.account_id == a and r.recipient.endswith("@qq.example")
    )
    assert await ids(StatusFilter(account_id=a, label="promo")) == expect(
        lambda m, r: m.account_id == a and m.label == "promo"
    )
    assert await ids(StatusFilter(email_type=EmailType.TRANSACTIONAL)) == expect(
        lambda m, r: m.email_type == EmailType.TRANSACTIONAL
    )
    assert await ids(StatusFilter(statuses=(Status.INVALID,))) == expect(lambda m, r: r.status == Status.INVALID)
    assert await ids(StatusFilter(statuses=(Status.INVALID, Status.SENDING))) == expect(lambda m, r: True)
    assert await ids(StatusFilter(sub_statuses=(SubStatus.UNSUBSCRIBE,))) == expect(
        lambda m, r: r.sub_status == SubStatus.UNSUBSCRIBE
    )
    start, end = T0 + timedelta(days=2), T0 + timedelta(days=5)
    assert await ids(StatusFilter(start=start, end=end)) == expect(lambda m, r: start <= m.request_time < end)
    combo = StatusFilter(account_id=a, api_user="u1", email_type=EmailType.MARKETING, start=start)
    assert await ids(combo) == expect(
        lambda m, r: (
            m.account_id == a and m.api_user == "u1" and m.email_type == EmailType.MARKETING and m.request_time >= start
        )
    )

    # paging: concatenated pages == the full ordered result; total on every page
    full = await ids(StatusFilter(account_id=a))
    got: list[tuple[str, str]] = []
    for offset in range(0, len(full) + 7, 7):
        page = await storage.statuses.search(StatusFilter(account_id=a), limit=7, offset=offset)
        assert page.total == len(full)
        got += [(r.email_id, r.recipient) for r in page.items]
        assert all(len(r.log) == 1 for r in page.items)  # log loaded with the page
    assert got == full
    times = [r.request_time for r in (await storage.statuses.search(StatusFilter(), limit=500)).items]
    assert times == sorted(times, reverse=True)

    capped = await SqlStatusRepo(storage.executor, count_cap=5).search(StatusFilter(account_id=a), limit=2)
    assert capped.total == 5 and len(capped.items) == 2 and capped.has_more


async def test_search_keyset_pages(storage: SqlStorage) -> None:
    a, _, _ = await _search_dataset(storage)
    flt = StatusFilter(account_id=a, domain="gmail.example")
    full = [r.key for r in (await storage.statuses.search(flt, limit=500, with_log=False)).items]
    assert len(full) == 30
    walked: list[StatusKey] = []
    after: StatusKey | None = None
    pages = 0
    while True:
        page = await storage.statuses.search(flt, limit=7, after=after)
        pages += 1
        assert page.total == (30 if pages <= 2 else 31)  # the whole filter, not what is left after the cursor
        assert all(len(r.log) == 1 for r in page.items)
        walked += [r.key for r in page.items]
        if pages == 2:  # newer mail arriving mid-walk must not shift the pages already walked
            late = _message("e999", a, request_time=T0 + timedelta(days=99))
            await storage.statuses.record_submissions([_sub(late, "late@gmail.example")])
        if not page.has_more:
            break
        after = page.items[-1].key
    assert walked == full and pages == 5  # 7+7+7+7+2, no empty page at the end
    exact = await storage.statuses.search(flt, limit=31)
    assert not exact.has_more and exact.total == 31  # the late one is now counted too
    last = await storage.statuses.search(flt, limit=7, after=full[-1])
    assert last.items == [] and not last.has_more and last.total == 31
    uncounted = await storage.statuses.search(flt, limit=7, after=full[6], count=False)
    assert [r.key for r in uncounted.items] == full[7:14] and uncounted.has_more and uncounted.total == 7
    # ties on request_time and email_id are broken by recipient (several recipients per message)
    tie = StatusFilter(account_id=a, email_ids=("e007", "e014", "e021"))
    keys = [r.key for r in (await storage.statuses.search(tie, limit=10)).items]
    one_by_one: list[StatusKey] = []
    after = None
    for _ in range(len(keys)):
        page = await storage.statuses.search(tie, limit=1, after=after)
        one_by_one += [r.key for r in page.items]
        after = page.items[-1].key
    assert one_by_one == keys and len(keys) == 6


async def test_search_oldest_first_keyset_pages(storage: SqlStorage) -> None:
    """The console's "oldest first": the exact reverse of the newest-first order, paged by keyset in
    that order, ties broken by recipient too, and the same total."""
    a, _, _ = await _search_dataset(storage)
    flt = StatusFilter(account_id=a, domain="gmail.example")
    newest = [r.key for r in (await storage.statuses.search(flt, limit=500, with_log=False)).items]
    walked: list[StatusKey] = []
    after: StatusKey | None = None
    while True:
        page = await storage.statuses.search(flt, limit=7, after=after, oldest_first=True)
        assert page.total == 30 and all(len(r.log) == 1 for r in page.items)
        walked += [r.key for r in page.items]
        if not page.has_more:
            break
        after = page.items[-1].key
    assert walked == newest[::-1] and len(walked) == 30
    tie = StatusFilter(account_id=a, email_ids=("e007", "e014", "e021"))
    keys = [r.key for r in (await storage.statuses.search(tie, limit=10)).items]
    one_by_one: list[StatusKey] = []
    after = None
    for _ in range(len(keys)):
        page = await storage.statuses.search(tie, limit=1, after=after, oldest_first=True)
        one_by_one += [r.key for r in page.items]
        after = page.items[-1].key
    assert one_by_one == keys[::-1] and len(keys) == 6


async def test_update_status_and_append_log(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    await storage.statuses.record_submissions([_sub(_message("u1", acct), "a@x.com", "b@x.com")])
    st = storage.statuses
    t1 = T0 + timedelta(minutes=1)
    defer = LogEntry(t1, LogKind.ATTEMPT, "451 4.7.1 try later", 451, "4.7.1", "mx1.x.com", "198.51.100.1", 120)
    assert await st.update_status("u1", "A@x.com", Status.SENDING, None, "451 4.7.1 try later", defer)
    t2 = T0 + timedelta(minutes=6)
    ok = LogEntry(t2, LogKind.ATTEMPT, "250 2.0.0 ok", 250, "2.0.0", "mx2.x.com", "198.51.100.2", 80, rule="2xx")
    assert await st.update_status("u1", "a@x.com", Status.DELIVERED, None, "250 2.0.0 ok", ok, send_ip="203.0.113.5")
    t3 = T0 + timedelta(hours=2)
    fb = LogEntry(t3, LogKind.FEEDBACK, "dsn: 5.1.1 user unknown", enhanced="5.1.1", rule="dsn")
    assert await st.update_status("u1", "a@x.com", Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST, "user unknown", fb)
    await st.append_log("u1", "a@x.com", LogEntry(t3 + ms, LogKind.FEEDBACK, "open"))
    # a missing row: False and no orphan log line
    assert not await st.update_status("u1", "ghost@x.com", Status.DELIVERED, None, "x", ok)
    assert not await st.update_status("nope", "a@x.com", Status.DELIVERED, None, "x")

    recs = await st.get_message("u1", acct)
    assert [r.recipient for r in recs] == ["a@x.com", "b@x.com"]
    a = recs[0]
    assert (a.status, a.sub_status, a.reason) == (Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST, "user unknown")
    # the feedback entry did not overwrite the last attempt's facts
    assert (a.send_time, a.mx_host, a.mx_ip, a.send_ip) == (t2, "mx2.x.com", "198.51.100.2", "203.0.113.5")
    assert [(x.kind, x.code, x.text) for x in a.log] == [
        (LogKind.ACCEPTED, None, ""),
        (LogKind.ATTEMPT, 451, "451 4.7.1 try later"),
        (LogKind.ATTEMPT, 250, "250 2.0.0 ok"),
        (LogKind.FEEDBACK, None, "dsn: 5.1.1 user unknown"),
        (LogKind.FEEDBACK, None, "open"),
    ]
    assert a.log[1] == defer and a.log[2] == ok
    assert recs[1].status == Status.SENDING and len(recs[1].log) == 1
    assert await st.get_message("u1", acct + 999) == []
    assert len(await st.get_message("u1")) == 2


async def test_naive_datetime_is_refused(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    with pytest.raises(ValueError, match="naive"):
        await storage.suppressions.hits(acct, "u", "a@x.com", "x.com", datetime(2026, 1, 1))


async def test_feedback_seen_is_idempotent(storage: SqlStorage) -> None:
    now = T0
    assert await storage.feedback.mark_seen("dsn:abc:x@example.com", now) is True
    assert await storage.feedback.mark_seen("dsn:abc:x@example.com", now) is False
    assert await storage.feedback.mark_seen("dsn:abc:y@example.com", now) is True


async def test_find_by_message_id(storage: SqlStorage) -> None:
    acct = await storage.accounts.ensure_account("mid")
    msg = MessageRecord("01MIDTEST00000000000000000", acct.id, "u", "s@example.com", "", None, None, 1, T0,
                        "127.0.0.1", "n", message_id="<abc@example.com>")
    await storage.statuses.record_submissions([SubmissionRecord(msg, (RecipientOutcome("r@example.com",
                                                                                         Status.SENDING),))])
    assert await storage.statuses.find_by_message_id("<abc@example.com>") == [(msg.email_id, acct.id)]
    assert await storage.statuses.find_by_message_id("<other@example.com>") == []


# ---------------------------------------------------------------- labels


async def test_labels_create_list_rename_delete(storage: SqlStorage) -> None:
    a = (await storage.accounts.ensure_account("acme")).id
    b = (await storage.accounts.ensure_account("globex")).id
    promo = await storage.labels.create(a, "Promo_2026", T0)
    news = await storage.labels.create(a, "news%letter", T0 + timedelta(seconds=1))
    other = await storage.labels.create(b, "Promo_2026", T0)  # names are per account
    assert promo.label_id != news.label_id != other.label_id
    assert (promo.name, promo.created_at, promo.updated_at) == ("Promo_2026", T0, T0)
    with pytest.raises(Conflict):
        await storage.labels.create(a, "Promo_2026", T0)
    page = await storage.labels.list(a)
    assert [x.name for x in page.items] == ["Promo_2026", "news%letter"] and page.total == 2
    # contains, case-insensitive; LIKE wildcards in the text are plain characters
    assert [x.name for x in (await storage.labels.list(a, name_contains="promo")).items] == ["Promo_2026"]
    assert [x.name for x in (await storage.labels.list(a, name_contains="%")).items] == ["news%letter"]
    assert [x.name for x in (await storage.labels.list(a, name_contains="o_2")).items] == ["Promo_2026"]
    assert (await storage.labels.list(a, name_contains="o_x")).total == 0
    paged = await storage.labels.list(a, offset=1, limit=1)
    assert [x.name for x in paged.items] == ["news%letter"] and paged.total == 2
    assert (await storage.labels.list(a, limit=0)).total == 2
    assert await storage.labels.get(b, promo.label_id) is None  # another account's id
    assert await storage.labels.get_by_name(a, "Promo_2026") == promo
    assert await storage.labels.get_by_name(a, "promo_2026") is None  # names are exact
    renamed = await storage.labels.rename(a, promo.label_id, "spring", T0 + timedelta(hours=1))
    assert renamed is not None and (renamed.name, renamed.created_at, renamed.updated_at) == (
        "spring", T0, T0 + timedelta(hours=1))
    with pytest.raises(Conflict):
        await storage.labels.rename(a, news.label_id, "spring", T0)
    assert await storage.labels.rename(b, news.label_id, "x", T0) is None
    assert not await storage.labels.delete(b, news.label_id)
    assert await storage.labels.delete(a, news.label_id)
    assert await storage.labels.get(a, news.label_id) is None
    assert [x.name for x in (await storage.labels.list(b)).items] == ["Promo_2026"]


# ---------------------------------------------------------------- daily statistics


async def test_stats_by_day_follow_status_changes(storage: SqlStorage) -> None:
    a = (await storage.accounts.ensure_account("acme")).id
    b = (await storage.accounts.ensure_account("globex")).id
    late = T0.replace(hour=22)  # 2026-03-01 22:00 UTC is 2026-03-02 in UTC+8
    await storage.statuses.record_submissions([
        SubmissionRecord(_message("s1", a, label="promo"), (
            RecipientOutcome("x@gmail.example", Status.SENDING), RecipientOutcome("y@gmail.example", Status.SENDING),
            RecipientOutcome("z@qq.example", Status.INVALID, SubStatus.UNSUBSCRIBE, "unsubscribe"))),
        SubmissionRecord(_message("s2", a, api_user="u2", request_time=late),
                         (RecipientOutcome("x@gmail.example", Status.SENDING),)),
        SubmissionRecord(_message("s3", b), (RecipientOutcome("x@gmail.example", Status.SENDING),)),
    ])
    # the same submission again changes nothing (the rows exist: no double count)
    await storage.statuses.record_submissions([
        SubmissionRecord(_message("s3", b), (RecipientOutcome("x@gmail.example", Status.SENDING),))])
    st = storage.statuses
    assert await st.update_status("s1", "x@gmail.example", Status.DELIVERED, None, "250 ok")
    assert await st.update_status("s1", "y@gmail.example", Status.SENDING, None, "451 later")  # no change
    assert await st.update_status("s1", "y@gmail.example", Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST, "5.1.1")
    assert await st.update_status("s1", "y@gmail.example", Status.SOFT_BOUNCE, SubStatus.SB_REJECTED, "5.7.1")
    day = T0.date()

    def rows(got: list[StatsCount]) -> list[tuple[object, ...]]:
        return [(c.day, c.api_user, c.domain, c.label, int(c.status), c.sub_status and int(c.sub_status), c.count)
                for c in got]

    assert rows(await storage.stats.by_day(StatsFilter(a, day, day))) == [
        (day, "u1", "gmail.example", "promo", 1, None, 1),
        (day, "u1", "gmail.example", "promo", 5, 508, 1),
        (day, "u1", "qq.example", "promo", 4, 402, 1),
        (day, "u2", "gmail.example", "", 18, None, 1),
    ]
    # a time zone of whole hours regroups the hours into its days
    east = await storage.stats.by_day(StatsFilter(a, day, day + timedelta(days=1), tz_hours=8))
    assert [(c.day, c.api_user) for c in east if c.api_user == "u2"] == [(day + timedelta(days=1), "u2")]
    assert await storage.stats.by_day(StatsFilter(a, day, day, tz_hours=8)) == [
        c for c in east if c.day == day]
    # the dimension filters, and other accounts and days stay out
    got = await storage.stats.by_day(StatsFilter(a, day, day, api_users=("u1",), domains=("qq.example",),
                                                 labels=("promo",)))
    assert rows(got) == [(day, "u1", "qq.example", "promo", 4, 402, 1)]
    assert rows(await storage.stats.by_day(StatsFilter(a, day, day, labels=("",)))) == [
        (day, "u2", "gmail.example", "", 18, None, 1)]
    assert rows(await storage.stats.by_day(StatsFilter(b, day, day))) == [
        (day, "u1", "gmail.example", "", 18, None, 1)]
    assert await storage.stats.by_day(StatsFilter(a, day - timedelta(days=3), day - timedelta(days=1))) == []
    # compaction folds the pending changes (PostgreSQL) without changing any answer
    before = await storage.stats.by_day(StatsFilter(a, day, day + timedelta(days=1), tz_hours=8))
    moved = await storage.stats.compact()
    assert (moved > 0) == (storage.dialect == "postgres")
    assert await storage.stats.compact() == 0
    assert await storage.stats.by_day(StatsFilter(a, day, day + timedelta(days=1), tz_hours=8)) == before
    assert await st.update_status("s1", "x@gmail.example", Status.SOFT_BOUNCE, SubStatus.SB_OTHERS, "bounce")
    assert await storage.stats.compact(batch=1) >= 0  # a small batch leaves the rest for later
    got = rows(await storage.stats.by_day(StatsFilter(a, day, day, api_users=("u1",), domains=("gmail.example",))))
    assert got == [(day, "u1", "gmail.example", "promo", 5, 508, 1), (day, "u1", "gmail.example", "promo", 5, 509, 1)]


async def test_stats_stay_exact_with_two_nodes_writing_and_compacting(storage: SqlStorage, storage_url: str) -> None:
    """Two nodes record and update statuses of the same counters in opposite orders while both
    compact: no write fails (no lock-order deadlock on the counters) and every count is exact."""
    other = await open_storage(storage_url)
    try:
        acct = (await storage.accounts.ensure_account("acme")).id
        domains = [f"d{i}.example" for i in range(8)]

        async def node(st: SqlStorage, n: int, tag: str) -> None:
            for k in range(n):
                email_id = f"{tag}{k}"
                order = domains if k % 2 else domains[::-1]
                await st.statuses.record_submissions([SubmissionRecord(
                    _message(email_id, acct), tuple(RecipientOutcome(f"r@{d}", Status.SENDING) for d in order))])
                for d in reversed(order):
                    assert await st.statuses.update_status(email_id, f"r@{d}", Status.DELIVERED, None, "250 ok")

        async def compactor(st: SqlStorage, stop: asyncio.Event) -> None:
            while not stop.is_set():
                await st.stats.compact(batch=50)
                await asyncio.sleep(0)

        stop = asyncio.Event()
        compactors = [asyncio.create_task(compactor(s, stop)) for s in (storage, other)]
        async with asyncio.timeout(60):
            await asyncio.gather(*(node(storage if i % 2 else other, 6, f"n{i}-") for i in range(12)))
        stop.set()
        await asyncio.gather(*compactors)
        got = await storage.stats.by_day(StatsFilter(acct, T0.date(), T0.date()))
        assert {(c.domain, int(c.status), c.count) for c in got} == {(d, 1, 72) for d in domains}
        while await other.stats.compact() > 0:
            pass
        assert await storage.stats.by_day(StatsFilter(acct, T0.date(), T0.date())) == got
    finally:
        await other.close()
