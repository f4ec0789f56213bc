"""Storage layer: records, the repository interface, and its SQLite/PostgreSQL implementation.

``open_storage(url)`` is the only constructor the application needs:

- ``sqlite:///abs/path/mailrelay.sqlite3`` — embedded default (see ``default_sqlite_url``);
- ``postgresql://user@host:port/db`` (or ``postgres://``) — production, via asyncpg.

The returned object implements ``storage.protocols.Storage``; it is opened, not migrated (call
``migrate()``, or ``require_current_schema()`` before serving).
"""

from __future__ import annotations

from pathlib import Path

from storage.errors import StorageError
from storage.executor import Executor
from storage.paging import DEFAULT_COUNT_CAP
from storage.protocols import Storage
from storage.queries import load_queries
from storage.store import SqlStorage
from storage.timing import StorageObserver, TimedExecutor

__all__ = ["DEFAULT_COUNT_CAP", "SqlStorage", "StorageObserver", "default_sqlite_url", "open_storage"]

SQLITE_FILE_NAME = "mailrelay.sqlite3"


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite://{(Path(data_dir).expanduser().resolve() / SQLITE_FILE_NAME).as_posix()}"


async def open_storage(
    url: str,
    *,
    count_cap: int | None = DEFAULT_COUNT_CAP,
    pool_min: int = 2,
    pool_max: int = 10,
    sqlite_readers: int = 4,
    observe: StorageObserver | None = None,
) -> SqlStorage:
    """Open a storage from its URL.

    ``count_cap`` bounds the counting behind ``Page.total`` (None = exact counts); ``pool_*`` size
    the asyncpg pool; ``sqlite_readers`` is the number of SQLite reader threads; ``observe(op,
    seconds)`` is told the latency of every executor call (``storage/timing.py``).
    """
    storage: SqlStorage
    ex: Executor
    if url.startswith("sqlite://"):
        from storage.backends.sqlite import SqliteExecutor

        path = url[len("sqlite://") :]
        if not path.startswith("/"):
            raise StorageError(f"sqlite URL needs an absolute path (sqlite:///abs/path): {url!r}")
        ex = await SqliteExecutor.open(Path(path), load_queries("sqlite"), readers=sqlite_readers)
    elif url.startswith(("postgresql://", "postgres://")):
        from storage.backends.postgres import PostgresExecutor

        ex = await PostgresExecutor.open(url, load_queries("postgres"), min_size=pool_min, max_size=pool_max)
    else:
        raise StorageError(f"unsupported storage URL {url!r} (sqlite:///... or postgresql://...)")
    storage = SqlStorage(url, TimedExecutor(ex, observe) if observe else ex, count_cap=count_cap)
    _check: Storage = storage  # SqlStorage must satisfy the protocol (checked by mypy)
    del _check
    return storage
