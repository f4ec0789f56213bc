"""PostgreSQL executor over an asyncpg pool, with a group-commit batcher for ``write_batch``.

Group commit: ``write_batch`` calls that arrive within one loop tick (and any that arrive while
all flush slots are busy) are run by one task in ONE transaction on one connection, so N
concurrent submissions cost one commit. Optimistic: the whole group runs without savepoints; if
it fails, it is rolled back and every job is re-run in its own transaction, so a bad job fails
only its own caller. If the connection died instead (server restart or crash), every job of the
group fails with :class:`ConnectionLost` and its caller retries; the pool connects anew. A
connection is never used after a failure (asyncpg releases a dead one back to the pool by itself).

Columnar queries (``-- mode: columnar``) turn ``executemany`` into ONE statement with one array
per column (``unnest``), which is how bulk imports reach hundreds of thousands of rows a second.

Must never: hold a pooled connection across an await that is not a database call.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import asyncpg

from storage.errors import Conflict, StorageError
from storage.executor import Executor, Op, Params, QueryRef, Row, WriteStats, resolve, rowcount_from_status
from storage.queries import Queries, Query

MAX_INFLIGHT_FLUSHES = 4
T = TypeVar("T")


# The server or the socket went away (restart, crash, network): the connection is dead, and asyncpg
# has already released it back to the pool, so nothing may run on it any more.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,  # 08xxx, ConnectionDoesNotExistError
    asyncpg.AdminShutdownError,  # 57P01: fast/smart shutdown
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.CannotConnectNowError,  # 57P03: starting up / shutting down
    OSError,
    TimeoutError,
)


class ConnectionLost(StorageError):
    """The database connection died under a statement (the statement's outcome is unknown only
    for a COMMIT; callers retry, the pool connects anew)."""


def _is_closed(conn: Any) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # the proxy was detached: asyncpg released the dead connection
        return True


@contextmanager
def _errors(conn: Any = None) -> Iterator[None]:
    """asyncpg errors -> storage errors. With ``conn`` (a checked-out connection), any error on a
    connection that turns out closed is a lost connection, whatever asyncpg called it."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(str(exc)) from exc
    except _CONNECTION_LOST as exc:
        raise ConnectionLost(f"postgres: connection lost: {exc}") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        if conn is not None and _is_closed(conn):
            raise ConnectionLost(f"postgres: connection lost: {exc}") from exc
        raise StorageError(f"postgres: {exc}") from exc


def _args(q: Query, params: Params | None) -> list[Any]:
    return [list(v) if isinstance(v, tuple) else v for v in q.args(params)]


async def _run_ops(conn: Any, ops: Sequence[tuple[Query, Sequence[Params]]]) -> list[int]:
    counts: list[int] = []
    for q, rows in ops:
        if not rows:
            counts.append(0)
        elif q.columnar:
            columns = [[r[n] for r in rows] for n in q.params]
            counts.append(rowcount_from_status(await conn.execute(q.sql, *columns)))
        elif len(rows) == 1:
            counts.append(rowcount_from_status(await conn.execute(q.sql, *_args(q, rows[0]))))
        else:
            await conn.executemany(q.sql, [_args(q, r) for r in rows])
            counts.append(-1)
    return counts


class _Job:
    __slots__ = ("future", "ops")

    def __init__(self, ops: list[tuple[Query, Sequence[Params]]], loop: asyncio.AbstractEventLoop) -> None:
        self.ops = ops
        self.future: asyncio.Future[list[int]] = loop.create_future()

    def settle(self, result: list[int] | None, exc: BaseException | None) -> None:
        if self.future.done():
            return
        if exc is not None:
            self.future.set_exception(exc)
        else:
            assert result is not None
            self.future.set_result(result)


def _mergeable(job: _Job) -> tuple[str, ...] | None:
    """Jobs made only of columnar ops with the same query sequence can share ONE statement per op."""
    if not job.ops or not all(q.columnar for q, _ in job.ops):
        return None
    return tuple(q.name for q, _ in job.ops)


async def _run_group(conn: Any, group: list[_Job]) -> list[list[int]]:
    """Run every job of a group on ``conn`` (inside the caller's transaction). Consecutive
    mergeable jobs with the same shape are concatenated into one statement per op; their per-job
    row counts are then unknown (-1). Duplicate keys across merged jobs make the statement fail,
    and the caller's fallback re-runs each job alone."""
    results: list[list[int]] = []
    i = 0
    while i < len(group):
        sig = _mergeable(group[i])
        j = i + 1
        while sig is not None and j < len(group) and _mergeable(group[j]) == sig:
            j += 1
        if j - i == 1:
            results.append(await _run_ops(conn, group[i].ops))
        else:
            run = group[i:j]
            merged = [(q, [row for job in run for row in job.ops[k][1]]) for k, (q, _) in enumerate(run[0].ops)]
            await _run_ops(conn, merged)
            results.extend([-1] * len(merged) for _ in run)
        i = j
    return results


class _Base:
    dialect = "postgres"
    queries: Queries
    _target: Any  # asyncpg Pool or Connection: both have fetch/fetchrow/fetchval/execute
    _conn: Any = None  # the connection, when bound to one (see _errors)

    async def fetch(self, query: QueryRef, params: Params | None = None) -> list[Row]:
        q = resolve(self.queries, query)
        with _errors(self._conn):
            rows: list[Row] = await self._target.fetch(q.sql, *_args(q, params))
        return rows

    async def fetchrow(self, query: QueryRef, params: Params | None = None) -> Row | None:
        q = resolve(self.queries, query)
        with _errors(self._conn):
            row: Row | None = await self._target.fetchrow(q.sql, *_args(q, params))
        return row

    async def fetchval(self, query: QueryRef, params: Params | None = None) -> Any:
        q = resolve(self.queries, query)
        with _errors(self._conn):
            return await self._target.fetchval(q.sql, *_args(q, params))

    async def execute(self, query: QueryRef, params: Params | None = None) -> int:
        q = resolve(self.queries, query)
        with _errors(self._conn):
            return rowcount_from_status(await self._target.execute(q.sql, *_args(q, params)))

    async def executemany(self, query: QueryRef, rows: Sequence[Params]) -> None:
        await self.write_batch([Op(query, rows)])

    async def write_batch(self, ops: Sequence[Op]) -> list[int]:
        raise NotImplementedError

    async def execute_script(self, script: str) -> None:
        with _errors(self._conn):
            await self._target.execute(script)


class PostgresExecutor(_Base):
    def __init__(self, pool: Any, queries: Queries) -> None:
        self._target = pool
        self._pool = pool
        self.queries = queries
        self.stats = WriteStats()
        self._pending: list[_Job] = []
        self._kick_scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def open(cls, dsn: str, queries: Queries, *, min_size: int = 2, max_size: int = 10) -> PostgresExecutor:
        try:
            # JIT off: our queries are short index scans; on big tables the planner's cost passes
            # the JIT threshold and compiling costs 5-150 ms, more than the query itself
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                             server_settings={"jit": "off"})
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StorageError(f"postgres: cannot connect: {exc}") from exc
        return cls(pool, queries)

    # ------------------------------------------------------------ group commit

    async def write_batch(self, ops: Sequence[Op]) -> list[int]:
        if self._closed:
            raise StorageError("storage is closed")
        loop = asyncio.get_running_loop()
        job = _Job([(resolve(self.queries, op.query), op.rows) for op in ops], loop)
        self._pending.append(job)
        if not self._kick_scheduled:
            self._kick_scheduled = True
            loop.call_soon(self._kick)
        return await job.future

    def _kick(self) -> None:
        self._kick_scheduled = False
        if not self._pending or len(self._inflight) >= MAX_INFLIGHT_FLUSHES:
            return  # a finishing flush kicks again
        group, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(group))
        self._inflight.add(task)
        task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._pending and not self._kick_scheduled:
            self._kick_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick)

    async def _in_transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """``work(conn)`` in one transaction on a connection acquired for it alone."""
        with _errors():
            async with self._pool.acquire() as conn:
                with _errors(conn):
                    async with conn.transaction():
                        return await work(conn)

    async def _flush(self, group: list[_Job]) -> None:
        try:
            try:
                results = await self._in_transaction(lambda conn: _run_group(conn, group))
            except StorageError as exc:
                if len(group) == 1 or isinstance(exc, ConnectionLost):
                    # not a job's fault: every caller gets the error and retries
                    for job in group:
                        job.settle(None, exc)
                    return
                # isolate the bad job(s), each in its own transaction on a connection acquired
                # for it: the group's connection is never reused after a failure
                for i, job in enumerate(group):
                    try:
                        one = await self._in_transaction(functools.partial(_run_ops, ops=job.ops))
                    except ConnectionLost as lost:
                        for rest in group[i:]:
                            rest.settle(None, lost)
                        return
                    except StorageError as one_exc:
                        job.settle(None, one_exc)
                    else:  # only once committed: the caller may read its rows right away
                        job.settle(one, None)
                return
            self.stats.commits += 1
            self.stats.jobs += len(group)
            for job, result in zip(group, results, strict=True):
                job.settle(result, None)
        except BaseException as exc:  # cancelled, a bug, ...
            err = exc if isinstance(exc, StorageError) else StorageError(f"postgres: {exc!r}")
            for job in group:
                job.settle(None, err)
            if isinstance(exc, asyncio.CancelledError):
                raise

    # ------------------------------------------------------------ transactions / lifecycle

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        with _errors():
            async with self._pool.acquire() as conn:
                with _errors(conn):
                    async with conn.transaction():
                        yield _ConnExecutor(conn, self.queries)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._inflight or self._pending:
            if self._pending and not self._inflight:
                self._kick()
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
        try:
            await asyncio.wait_for(self._pool.close(), timeout=10)
        except TimeoutError:
            self._pool.terminate()


class _ConnExecutor(_Base):
    """An executor bound to one connection inside a transaction."""

    def __init__(self, conn: Any, queries: Queries) -> None:
        self._target = conn
        self._conn = conn
        self.queries = queries
        self.stats = WriteStats()

    async def write_batch(self, ops: Sequence[Op]) -> list[int]:
        with _errors(self._conn):
            async with self._target.transaction():  # a savepoint: atomic per call
                return await _run_ops(self._target, [(resolve(self.queries, o.query), o.rows) for o in ops])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        with _errors(self._conn):
            async with self._target.transaction():
                yield self

    async def close(self) -> None:
        return None
