"""The database a data directory uses, opened for a server: ``$MAILRELAY_DATABASE_URL``, else
``[storage] url``, else SQLite in the data directory; a schema behind the program is refused."""

from __future__ import annotations

import os

from relay.config import Config
from storage import StorageObserver, default_sqlite_url, open_storage
from storage.errors import SchemaBehind
from storage.protocols import Storage


def storage_url(cfg: Config) -> str:
    return os.environ.get("MAILRELAY_DATABASE_URL") or cfg.storage.url or default_sqlite_url(cfg.home)


async def open_checked_storage(
    cfg: Config, observe: StorageObserver | None = None, *, sqlite_readers: int = 4
) -> Storage:
    storage = await open_storage(storage_url(cfg), observe=observe, sqlite_readers=sqlite_readers)
    state = await storage.schema_state()
    if state.behind:
        await storage.close()
        raise SchemaBehind(
            f"database schema is at version {state.current}, this program needs {state.latest}: "
            "run `mailrelay db migrate`"
        )
    return storage
