"""The verified-credential cache: one scrypt for concurrent sessions; a revoke or a new key made
by another process (the CLI, another node) applies to the very next AUTH, with no scrypt for hits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.keys import hash_key
from relay.smtp import auth as auth_mod
from relay.smtp.auth import ApiUserAuthenticator
from storage import open_storage
from storage.records import utcnow


@pytest.fixture
async def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    storage = await open_storage(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    await storage.migrate()
    acct = await storage.accounts.ensure_account("acme")
    await storage.accounts.add_api_user("app1", acct.id, hash_key("k-123456789", n=2**10))
    calls: list[str] = []
    real = auth_mod.verify_key

    def counting(key: str, stored: str) -> bool:
        calls.append(key)
        return real(key, stored)

    monkeypatch.setattr(auth_mod, "verify_key", counting)
    a = ApiUserAuthenticator(storage.accounts, failure_delay=0)
    yield a, storage, calls
    await storage.close()


async def test_concurrent_sessions_share_one_check(setup) -> None:  # type: ignore[no-untyped-def]
    a, _storage, calls = setup
    results = await asyncio.gather(*(a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789") for _ in range(10)))
    assert all(r.ok for r in results) and len(calls) == 1
    assert (await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")).ok and len(calls) == 1


async def test_revoke_in_the_database_applies_to_the_next_auth(setup) -> None:  # type: ignore[no-untyped-def]
    a, storage, calls = setup
    assert (await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")).ok
    assert (await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")).ok and len(calls) == 1  # cached
    await storage.accounts.revoke_api_user("app1", utcnow())  # as the CLI does: nothing tells `a`
    d = await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")
    assert not d.ok and d.reply.startswith("535 ")


async def test_new_key_applies_to_the_next_auth(setup) -> None:  # type: ignore[no-untyped-def]
    a, storage, calls = setup
    ok = await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")
    assert ok.ok and ok.principal is not None and await a.still_valid(ok.principal)
    assert await storage.accounts.replace_api_user_key("app1", hash_key("k-new-987654321", n=2**10))
    assert not (await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")).ok
    assert not await a.still_valid(ok.principal)  # a session authenticated with the old key
    new = await a.authenticate("127.0.0.1", 0, b"app1", b"k-new-987654321")
    assert new.ok and new.principal is not None and await a.still_valid(new.principal)
    n = len(calls)
    assert (await a.authenticate("127.0.0.1", 0, b"app1", b"k-new-987654321")).ok and len(calls) == n  # cached


class _GatedAccounts:
    """The real account repo; each get_api_user reads the row, then holds the answer until the
    test opens the gate (a read in flight whose row predates what happens meanwhile)."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.reads = 0
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def get_api_user(self, name: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        row = await self.real.get_api_user(name)  # type: ignore[attr-defined]
        self.started.set()
        await self.gate.wait()
        return row


async def test_concurrent_row_reads_are_shared(setup) -> None:  # type: ignore[no-untyped-def]
    _a, storage, _calls = setup
    gated = _GatedAccounts(storage.accounts)
    a = ApiUserAuthenticator(gated, failure_delay=0)  # type: ignore[arg-type]
    first = asyncio.ensure_future(a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789"))
    await gated.started.wait()
    rest = [asyncio.ensure_future(a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")) for _ in range(9)]
    await asyncio.sleep(0)
    gated.gate.set()
    results = await asyncio.gather(first, *rest)
    assert all(r.ok for r in results)
    assert gated.reads == 2  # the first read, then one read for the nine that came during it


async def test_a_revoke_during_a_shared_read_applies_to_later_callers(setup) -> None:  # type: ignore[no-untyped-def]
    _a, storage, _calls = setup
    gated = _GatedAccounts(storage.accounts)
    a = ApiUserAuthenticator(gated, failure_delay=0)  # type: ignore[arg-type]
    gated.gate.set()
    ok = await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")
    assert ok.ok and ok.principal is not None
    gated.gate.clear()
    gated.started.clear()
    early = asyncio.ensure_future(a.still_valid(ok.principal))  # its read is in flight...
    await gated.started.wait()
    await storage.accounts.revoke_api_user("app1", utcnow())  # ...when the revoke commits
    late = asyncio.ensure_future(a.still_valid(ok.principal))  # called after the revoke
    await asyncio.sleep(0)
    gated.gate.set()
    assert await early is True  # its row was read before the revoke
    assert await late is False  # must not get the earlier read's row
    d = await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")
    assert not d.ok and d.reply.startswith("535 ")


def test_the_failure_throttle_tells_who_becomes_blocked_and_for_how_long() -> None:
    from relay.smtp.auth import FailureThrottle

    told: list[tuple[str, str, float]] = []
    throttle = FailureThrottle(per_ip=2, per_user=3, window=60.0)
    throttle.on_block = lambda kind, key, left: told.append((kind, key, left))
    throttle.failed_now("192.0.2.1", "app1")
    assert told == [] and not throttle.blocked_now("192.0.2.1", "app1")
    throttle.failed_now("192.0.2.1", "app1")  # the IP's second failure: blocked for the window
    assert [(k, key) for k, key, _ in told] == [("ip", "192.0.2.1")] and 59 < told[0][2] <= 60
    throttle.failed_now("192.0.2.9", "app1")  # the user's third, from elsewhere
    assert ("user", "app1") in [(k, key) for k, key, _ in told]
    assert {(k, key) for k, key, _ in throttle.blocked_list()} == {("ip", "192.0.2.1"), ("user", "app1")}
