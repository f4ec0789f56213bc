"""The verified-credential cache: one scrypt for concurrent sessions, no stampede on expiry,
revocation noticed by the background re-check."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.keys import hash_key
from relay.smtp import auth as auth_mod
from relay.smtp.auth import CACHE_TTL, ApiUserAuthenticator
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


async def test_expired_entry_is_rechecked_in_the_background(setup) -> None:  # type: ignore[no-untyped-def]
    a, storage, calls = setup
    assert (await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")).ok
    for k, (at, user) in list(a._cache.items()):
        a._cache[k] = (at - CACHE_TTL - 1, user)
    await storage.accounts.revoke_api_user("app1", utcnow())
    assert (await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")).ok  # served while re-checking
    await asyncio.gather(*a._tasks)
    assert not (await a.authenticate("127.0.0.1", 0, b"app1", b"k-123456789")).ok  # revocation seen
    assert len(calls) == 2  # the stale hit needed no scrypt; the revoked user's retry did
