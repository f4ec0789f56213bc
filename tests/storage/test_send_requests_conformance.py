"""Storage conformance for the request_id of the HTTP send API (both backends): a claim is taken
once; a retry sees the stored answer (or that the first request is still running); an expired or
abandoned claim is taken again; a released claim lets a retry send."""

from __future__ import annotations

from datetime import timedelta

from storage import SqlStorage
from tests.storage.test_conformance import T0

KEEP = timedelta(hours=24)
STALE = timedelta(minutes=10)


async def test_claim_complete_replay_expire(storage: SqlStorage) -> None:
    repo = storage.send_requests
    first = await repo.claim("app1", "r-1", T0, KEEP, STALE)
    assert first.claimed
    running = await repo.claim("app1", "r-1", T0 + timedelta(seconds=1), KEEP, STALE)
    assert not running.claimed and running.response is None
    assert (await repo.claim("app2", "r-1", T0, KEEP, STALE)).claimed  # per API_USER
    await repo.complete("app1", "r-1", '{"email_ids": ["X$a@example.com"]}')
    replay = await repo.claim("app1", "r-1", T0 + timedelta(hours=23), KEEP, STALE)
    assert not replay.claimed and replay.response == '{"email_ids": ["X$a@example.com"]}'
    assert (await repo.claim("app1", "r-1", T0 + timedelta(hours=25), KEEP, STALE)).claimed  # expired
    assert await repo.purge(T0 + timedelta(hours=1)) == 1  # app2's; app1's was claimed anew at +25 h


async def test_abandoned_and_released_claims_are_taken_again(storage: SqlStorage) -> None:
    repo = storage.send_requests
    assert (await repo.claim("app1", "r-2", T0, KEEP, STALE)).claimed
    assert not (await repo.claim("app1", "r-2", T0 + timedelta(minutes=9), KEEP, STALE)).claimed
    assert (await repo.claim("app1", "r-2", T0 + timedelta(minutes=11), KEEP, STALE)).claimed  # abandoned
    await repo.release("app1", "r-2")
    assert (await repo.claim("app1", "r-2", T0 + timedelta(minutes=12), KEEP, STALE)).claimed
    await repo.complete("app1", "r-2", "{}")
    await repo.release("app1", "r-2")  # an answered request is never released
    assert (await repo.claim("app1", "r-2", T0 + timedelta(minutes=13), KEEP, STALE)).response == "{}"
