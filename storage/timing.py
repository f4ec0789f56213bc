"""TimedExecutor: an Executor that reports how long each call took to a callback (storage latency).

The callback is given by whoever opens the storage (``open_storage(url, observe=...)``), so the
storage layer records latency without knowing about metrics. It is called with the executor
method's name (``fetch``, ``fetchrow``, ``fetchval``, ``execute``, ``executemany``,
``write_batch``): a fixed vocabulary, safe as a metric label. It must be cheap and must not
raise; failed calls are timed too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from storage.executor import Executor, Op, Params, QueryRef, Row

StorageObserver = Callable[[str, float], None]
T = TypeVar("T")

OPS = ("fetch", "fetchrow", "fetchval", "execute", "executemany", "write_batch")


class TimedExecutor:
    def __init__(self, inner: Executor, observe: StorageObserver) -> None:
        self.inner = inner
        self.observe = observe
        self.dialect = inner.dialect
        self.queries = inner.queries
        self.stats = inner.stats

    async def _timed(self, op: str, call: Awaitable[T]) -> T:
        t0 = time.perf_counter()
        try:
            return await call
        finally:
            self.observe(op, time.perf_counter() - t0)

    async def fetch(self, query: QueryRef, params: Params | None = None) -> list[Row]:
        return await self._timed("fetch", self.inner.fetch(query, params))

    async def fetchrow(self, query: QueryRef, params: Params | None = None) -> Row | None:
        return await self._timed("fetchrow", self.inner.fetchrow(query, params))

    async def fetchval(self, query: QueryRef, params: Params | None = None) -> Any:
        return await self._timed("fetchval", self.inner.fetchval(query, params))

    async def execute(self, query: QueryRef, params: Params | None = None) -> int:
        return await self._timed("execute", self.inner.execute(query, params))

    async def executemany(self, query: QueryRef, rows: Sequence[Params]) -> None:
        await self._timed("executemany", self.inner.executemany(query, rows))

    async def write_batch(self, ops: Sequence[Op]) -> list[int]:
        return await self._timed("write_batch", self.inner.write_batch(ops))

    async def execute_script(self, script: str) -> None:  # migrations: not a latency worth watching
        await self.inner.execute_script(script)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self.inner.transaction() as tx:
            yield TimedExecutor(tx, self.observe)

    async def close(self) -> None:
        await self.inner.close()
