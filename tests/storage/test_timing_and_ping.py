"""The storage's readiness query and its latency hook, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from storage import open_storage
from storage.records import ListKind, SuppressionEntry


async def test_ping_answers_then_fails_once_closed(storage_url: str) -> None:
    st = await open_storage(storage_url)
    await st.migrate()
    await st.ping()
    await st.close()
    with pytest.raises(Exception):  # noqa: B017 - each backend has its own error for a closed pool
        await st.ping()


async def test_observe_is_told_every_call_with_its_op_and_duration(storage_url: str) -> None:
    seen: list[tuple[str, float]] = []
    st = await open_storage(storage_url, observe=lambda op, s: seen.append((op, s)))
    try:
        await st.migrate()
        seen.clear()
        acct = await st.accounts.ensure_account("acme")
        await st.suppressions.add([SuppressionEntry(acct.id, ListKind.BLOCK, "x@example.com")])
        async with st.executor.transaction() as tx:  # calls inside a transaction are timed too
            assert await tx.fetchval("health.ping") == 1
        await st.ping()
    finally:
        await st.close()
    ops = [op for op, _ in seen]
    assert ops[-2:] == ["fetchval", "fetchval"]
    assert {"write_batch"} & set(ops) or {"execute"} & set(ops), ops  # the writes were seen
    assert all(s >= 0 for _, s in seen) and len(seen) >= 4
