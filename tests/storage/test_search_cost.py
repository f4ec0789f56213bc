"""The cost of a status search grows linearly with the records it returns (both backends).

Proved by counting, not timing: the storage statements a page issues (a constant: the rows, then
ONE statement for every send log of the page) and, on SQLite, the virtual-machine steps those
statements take (SQLite's progress handler), which must grow like the page, not like its square.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storage import SqlStorage
from storage.records import (
    LogEntry,
    LogKind,
    MessageRecord,
    RecipientOutcome,
    Status,
    StatusFilter,
    SubmissionRecord,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


async def _seed(storage: SqlStorage, n: int) -> int:
    acct = (await storage.accounts.ensure_account("acme")).id
    batch = []
    for i in range(n):
        m = MessageRecord(f"e{i:06d}", acct, "app1", "a@shop.example", "s", None, None, 10,
                          T0 + timedelta(milliseconds=i), "192.0.2.1")
        batch.append(SubmissionRecord(m, (RecipientOutcome(f"r{i}@x.example", Status.SENDING),)))
    await storage.statuses.record_submissions(batch)  # one ACCEPTED log line per recipient
    for i in range(0, n, 7):  # and a second line on some of them
        await storage.statuses.append_log(f"e{i:06d}", f"r{i}@x.example",
                                          LogEntry(T0 + timedelta(seconds=5), LogKind.ATTEMPT, "250 ok", 250))
    return acct


class Meter:
    """Counts the statements the executor runs and (SQLite) the VM steps of the reading ones."""

    def __init__(self, storage: SqlStorage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        self.steps = 0
        self._depth = 0
        self._lock = threading.Lock()
        ex: Any = storage.executor
        for name in ("fetch", "fetchrow", "fetchval", "execute", "executemany", "write_batch"):
            monkeypatch.setattr(ex, name, self._counting(name, getattr(ex, name)))
        if storage.executor.dialect == "sqlite":
            read = ex._read

            async def stepping_read(fn: Callable[[Any], Any]) -> Any:
                def run(conn: Any) -> Any:
                    conn.set_progress_handler(self._step, 100)
                    try:
                        return fn(conn)
                    finally:
                        conn.set_progress_handler(None, 0)
                return await read(run)

            monkeypatch.setattr(ex, "_read", stepping_read)

    def _step(self) -> int:
        with self._lock:
            self.steps += 1
        return 0

    def _counting(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(query: Any, *args: Any, **kw: Any) -> Any:
            if not self._depth:  # fetchval -> fetchrow -> fetch is one statement
                self.statements.append(str(getattr(query, "name", query)) if name != "write_batch" else name)
            self._depth += 1
            try:
                return await real(query, *args, **kw)
            finally:
                self._depth -= 1
        return wrapper

    def reset(self) -> None:
        self.statements.clear()
        self.steps = 0


@pytest.mark.parametrize("with_count", [False, True])
async def test_search_cost_is_linear_in_the_page(storage: SqlStorage, monkeypatch: pytest.MonkeyPatch,
                                                 with_count: bool) -> None:
    acct = await _seed(storage, 2000)
    meter = Meter(storage, monkeypatch)
    flt = StatusFilter(account_id=acct)
    cost: dict[int, tuple[list[str], int]] = {}
    for n in (10, 100, 1000):
        meter.reset()
        page = await storage.statuses.search(flt, limit=n, count=with_count)
        assert len(page.items) == n and page.has_more
        assert all(r.log for r in page.items) and sum(len(r.log) == 2 for r in page.items) >= n // 7
        cost[n] = (list(meter.statements), meter.steps)
    # the same statements whatever the page size: the rows, (the total,) the send logs of the page
    assert cost[10][0] == cost[100][0] == cost[1000][0]
    assert cost[1000][0].count("log.for_pairs") == 1 and len(cost[1000][0]) == (3 if with_count else 2)
    if storage.executor.dialect == "sqlite":
        # 100x the records costs ~100x the work (it was ~100² x with a key-by-key join of the pairs)
        assert cost[1000][1] < 15 * cost[100][1], cost
