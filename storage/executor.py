"""The small async interface both backends provide and ``repos.py`` is written against.

Queries are referred to by name (``"status.search"``) or as a rendered :class:`Query`. Params
are a mapping of ``:name`` parameters; a list/tuple value is a list parameter (PostgreSQL array,
SQLite JSON text read with ``json_each``).

``write_batch`` is the group-commit entry point: every :class:`Op` of one call runs atomically
(all or nothing for that caller), and calls that arrive together share one transaction and one
commit. A failing batch fails only its own caller.

``transaction()`` gives an executor bound to one transaction. On SQLite it holds the single
writer for its whole duration, so keep it short and never await another storage write (outside
the transaction) inside it: that would wait for the writer the transaction is holding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from storage.queries import Queries, Query

Params = Mapping[str, Any]
QueryRef = str | Query


class Row(Protocol):
    """A result row: ``row["column"]`` (sqlite3.Row and asyncpg.Record both qualify)."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Op:
    """One statement of a write batch, run once per params mapping in ``rows``."""

    query: QueryRef
    rows: Sequence[Params]


@dataclass(slots=True)
class WriteStats:
    """Group-commit counters (for metrics and tests): jobs written vs transactions committed."""

    jobs: int = 0
    commits: int = 0


class Executor(Protocol):
    dialect: str
    queries: Queries
    stats: WriteStats

    async def fetch(self, query: QueryRef, params: Params | None = None) -> list[Row]: ...
    async def fetchrow(self, query: QueryRef, params: Params | None = None) -> Row | None: ...
    async def fetchval(self, query: QueryRef, params: Params | None = None) -> Any: ...
    async def execute(self, query: QueryRef, params: Params | None = None) -> int:
        """Run one statement; returns the affected row count."""
        ...

    async def executemany(self, query: QueryRef, rows: Sequence[Params]) -> None: ...
    async def write_batch(self, ops: Sequence[Op]) -> list[int]:
        """Run ``ops`` atomically, group-committed with concurrent callers. Returns one row count
        per op (exact for single-row ops; for multi-row ops a backend may return -1)."""
        ...

    async def execute_script(self, script: str) -> None:
        """Run a multi-statement DDL script (migrations)."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Executor]: ...
    async def close(self) -> None: ...


def resolve(queries: Queries, query: QueryRef) -> Query:
    return query if isinstance(query, Query) else queries[query]


def rowcount_from_status(status: str) -> int:
    """asyncpg command status (``"UPDATE 3"``, ``"INSERT 0 5"``) -> row count."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
