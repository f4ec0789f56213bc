"""SQLite executor: one writer thread with group commit, a few reader threads. Never blocks the loop.

Writes: ONE dedicated thread owns the write connection (WAL, ``synchronous=FULL``, busy_timeout).
It takes a job, drains every other job already waiting, and runs them all in ONE transaction,
each inside its own SAVEPOINT: a failing job is rolled back alone and only its caller sees the
error; the others commit together, so one fsync serves every caller waiting at that moment.
A caller's future resolves only after COMMIT returned, i.e. after the data is durable.

Reads: a small thread pool, each thread with its own read-only connection. In WAL mode readers
never block the writer and see every transaction committed before the read started.

Must never: call ``sqlite3`` on the event loop thread; share a connection between threads.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from storage.errors import Conflict, StorageError
from storage.executor import Executor, Op, Params, QueryRef, Row, WriteStats, resolve
from storage.queries import Queries, Query

T = TypeVar("T")
_Fn = Callable[[sqlite3.Connection], Any]

BUSY_TIMEOUT_MS = 10_000
MAX_GROUP = 256  # jobs per group commit


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        err: BaseException = Conflict(str(exc))
    elif isinstance(exc, sqlite3.Error):
        err = StorageError(f"sqlite: {exc}")
    else:
        return exc
    err.__cause__ = exc
    return err


def _sql_params(params: Params | None) -> dict[str, Any]:
    if not params:
        return {}
    return {k: json.dumps(list(v)) if isinstance(v, list | tuple) else v for k, v in params.items()}


# SQLite's page cache is per connection, and every page it holds is also in the OS page cache (which
# serves a miss without disk I/O), so five large private caches mostly hold five copies of the same
# hot pages: 64 MiB each made ~200 MB of steady RSS. The writer keeps the indexes it updates on
# every message; the readers do point lookups (suppression, API user) and page through searches.
WRITER_CACHE_KIB = 32 * 1024
READER_CACHE_KIB = 8 * 1024


def connect(path: Path, *, reader: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB if reader else WRITER_CACHE_KIB}")  # negative: KiB
    conn.execute("PRAGMA temp_store = MEMORY")
    if reader:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


class _Job(Generic[T]):
    """A unit of work for the writer thread; resolves an asyncio future on the caller's loop."""

    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[sqlite3.Connection], T], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[T] = loop.create_future()

    def finish(self, result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if exc is not None:
                self.future.set_exception(exc)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the caller's loop is closed; nobody is waiting
            pass


class _Rollback(Exception):
    """Raised inside a transaction session to roll its savepoint back."""


class _End:
    __slots__ = ("commit",)

    def __init__(self, commit: bool) -> None:
        self.commit = commit


class _Readers:
    """Reader threads, each with its own query-only connection, taking jobs from one queue.

    Lighter than a ThreadPoolExecutor + run_in_executor for the per-RCPT and per-AUTH point
    lookups (several per message): no concurrent.futures.Future, Condition or wrap_future per
    read, the result goes straight to the caller's asyncio future (as the writer's jobs do)."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"sqlite-reader_{i}", daemon=True)
                         for i in range(max(1, count))]
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while (job := self.jobs.get()) is not None:
            try:
                if conn is None:  # opened at the first read, as before: an idle reader costs nothing
                    conn = connect(self.path, reader=True)
                    with self._lock:
                        self._conns.append(conn)
                result = job.fn(conn)
            except BaseException as exc:
                job.finish(None, _translate(exc))
            else:
                job.finish(result, None)

    def stop(self) -> None:
        """Blocking: let queued reads finish, end the threads, close their connections."""
        for _ in self._threads:
            self.jobs.put(None)
        for t in self._threads:
            if t.ident is not None:
                t.join()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


class _Writer(threading.Thread):
    def __init__(self, path: Path, stats: WriteStats) -> None:
        super().__init__(name="sqlite-writer", daemon=True)
        self.path = path
        self.stats = stats
        self.jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()

    def run(self) -> None:
        try:
            conn = connect(self.path, reader=False)
        except BaseException as exc:  # fail every job until stopped
            while (job := self.jobs.get()) is not None:
                job.finish(None, _translate(exc))
            return
        try:
            stop = False
            while not stop:
                first = self.jobs.get()
                if first is None:
                    break
                group = [first]
                while len(group) < MAX_GROUP:
                    try:
                        nxt = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                try:
                    self._run_group(conn, group)
                except BaseException as exc:  # savepoint/commit machinery failed (I/O error, ...)
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    err = _translate(exc)
                    for job in group:  # finish() ignores jobs already settled
                        job.finish(None, err)
        finally:
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, group: list[_Job[Any]]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in group:
                job.finish(None, _translate(exc))
            return
        outcomes: list[tuple[_Job[Any], Any, BaseException | None]] = []
        for job in group:
            conn.execute("SAVEPOINT job")
            try:
                result = job.fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((job, None, _translate(exc)))
            else:
                conn.execute("RELEASE job")
                outcomes.append((job, result, None))
        try:
            conn.execute("COMMIT")
        except BaseException as commit_exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = _translate(commit_exc)
            for job, _, _ in outcomes:
                job.finish(None, err)
            return
        self.stats.commits += 1
        self.stats.jobs += len(group)
        for job, result, job_exc in outcomes:
            job.finish(result, job_exc)


def _run_ops(conn: sqlite3.Connection, ops: Sequence[tuple[Query, Sequence[Params]]]) -> list[int]:
    counts: list[int] = []
    for q, rows in ops:
        if len(rows) == 1:
            counts.append(conn.execute(q.sql, _sql_params(rows[0])).rowcount)
        elif rows:
            counts.append(conn.executemany(q.sql, [_sql_params(r) for r in rows]).rowcount)
        else:
            counts.append(0)
    return counts


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # split with sqlite3.complete_statement instead of executescript(), which would COMMIT the
    # surrounding transaction first
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            buf = ""
            if stmt.strip(";").strip():
                conn.execute(stmt)
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        if not sqlite3.complete_statement(buf + ";"):
            raise StorageError("script ends with an incomplete statement")
        conn.execute(buf)  # last statement without its ';'


class _Base:
    """Statement helpers shared by the pool executor and the transaction executor."""

    dialect = "sqlite"
    queries: Queries

    async def _write(self, fn: _Fn) -> Any:
        raise NotImplementedError

    async def _read(self, fn: _Fn) -> Any:
        raise NotImplementedError

    async def _run(self, q: Query, fn: _Fn) -> Any:
        return await (self._write(fn) if q.write else self._read(fn))

    async def fetch(self, query: QueryRef, params: Params | None = None) -> list[Row]:
        q = resolve(self.queries, query)
        p = _sql_params(params)
        rows: list[Row] = await self._run(q, lambda c: c.execute(q.sql, p).fetchall())
        return rows

    async def fetchrow(self, query: QueryRef, params: Params | None = None) -> Row | None:
        rows = await self.fetch(query, params)
        return rows[0] if rows else None

    async def fetchval(self, query: QueryRef, params: Params | None = None) -> Any:
        row = await self.fetchrow(query, params)
        return None if row is None else row[0]  # type: ignore[index]

    async def execute(self, query: QueryRef, params: Params | None = None) -> int:
        q = resolve(self.queries, query)
        p = _sql_params(params)
        count: int = await self._write(lambda c: c.execute(q.sql, p).rowcount)
        return count

    async def executemany(self, query: QueryRef, rows: Sequence[Params]) -> None:
        await self.write_batch([Op(query, rows)])

    async def write_batch(self, ops: Sequence[Op]) -> list[int]:
        resolved = [(resolve(self.queries, op.query), op.rows) for op in ops]
        counts: list[int] = await self._write(lambda c: _run_ops(c, resolved))
        return counts

    async def execute_script(self, script: str) -> None:
        await self._write(lambda c: _run_script(c, script))


class SqliteExecutor(_Base):
    def __init__(self, path: Path, queries: Queries, readers: int = 4) -> None:
        self.path = path
        self.queries = queries
        self.stats = WriteStats()
        self._writer = _Writer(path, self.stats)
        self._readers = _Readers(path, readers)
        self._closed = False

    @classmethod
    async def open(cls, path: Path, queries: Queries, readers: int = 4) -> SqliteExecutor:
        path.parent.mkdir(parents=True, exist_ok=True)
        ex = cls(path, queries, readers)
        ex._writer.start()
        ex._readers.start()
        try:
            await ex._write(lambda c: None)  # surfaces open errors; creates the file in WAL mode
        except BaseException:
            await ex.close()
            raise
        return ex

    async def _write(self, fn: _Fn) -> Any:
        if self._closed:
            raise StorageError("storage is closed")
        job: _Job[Any] = _Job(fn, asyncio.get_running_loop())
        self._writer.jobs.put(job)
        return await job.future

    async def _read(self, fn: _Fn) -> Any:
        if self._closed:
            raise StorageError("storage is closed")
        job: _Job[Any] = _Job(fn, asyncio.get_running_loop())
        self._readers.jobs.put(job)
        return await job.future

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        session = _Session(self.queries)
        job_done = asyncio.ensure_future(self._write(session.run))
        commit = False
        try:
            yield session
            commit = True
        finally:
            session.commands.put(_End(commit))
            try:
                await job_done
            except _Rollback:
                pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._writer.ident is not None:  # started
            self._writer.jobs.put(None)
            await loop.run_in_executor(None, self._writer.join)
        await loop.run_in_executor(None, self._readers.stop)


class _Session(_Base):
    """An open transaction on the writer connection: statements are shipped to the writer thread,
    which runs them one by one until the session ends (commit or rollback of its savepoint)."""

    def __init__(self, queries: Queries) -> None:
        self.queries = queries
        self.stats = WriteStats()  # a session's writes are counted by its executor's writer
        self.commands: queue.SimpleQueue[_Job[Any] | _End] = queue.SimpleQueue()
        self._depth = 0

    def run(self, conn: sqlite3.Connection) -> None:  # on the writer thread
        while True:
            cmd = self.commands.get()
            if isinstance(cmd, _End):
                if cmd.commit:
                    return
                raise _Rollback()
            try:
                cmd.finish(cmd.fn(conn), None)
            except BaseException as exc:
                cmd.finish(None, _translate(exc))

    async def _write(self, fn: _Fn) -> Any:
        job: _Job[Any] = _Job(fn, asyncio.get_running_loop())
        self.commands.put(job)
        return await job.future

    async def _read(self, fn: _Fn) -> Any:
        return await self._write(fn)  # same connection: reads see this transaction's writes

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        self._depth += 1
        name = f"nested_{self._depth}"
        await self._write(lambda c: c.execute(f"SAVEPOINT {name}"))
        try:
            yield self
        except BaseException:
            await self._write(lambda c: (c.execute(f"ROLLBACK TO {name}"), c.execute(f"RELEASE {name}")))
            raise
        else:
            await self._write(lambda c: c.execute(f"RELEASE {name}"))
        finally:
            self._depth -= 1

    async def close(self) -> None:
        return None
