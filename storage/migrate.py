"""Schema migrations, one runner for both backends.

Files: ``storage/migrations/<dialect>/NNNN_name.sql`` (DDL differs per backend; the version
numbers must stay in step). Applied migrations are recorded in ``schema_migrations(version,
name, checksum, applied_at)``; the checksum is the SHA-256 of the file text.

Guarantees:
- pending migrations are applied in version order, all in ONE transaction together with their
  bookkeeping rows (PostgreSQL DDL is transactional; SQLite too), under a lock so two nodes
  migrating at once cannot both apply a version;
- an applied migration whose file changed since (checksum mismatch) is an error, never ignored;
- a second ``migrate`` applies nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from storage import codec
from storage.errors import StorageError
from storage.executor import Executor
from storage.protocols import SchemaState
from storage.records import utcnow

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(StorageError):
    """Migration files and the database disagree (changed checksum, bad file name, ...)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def load_migrations(dialect: str) -> list[Migration]:
    folder = resources.files("storage").joinpath("migrations", dialect)
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _FILE.match(entry.name)
        if m is None:
            raise MigrationError(f"bad migration file name {dialect}/{entry.name} (want NNNN_name.sql)")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two {dialect} migrations with version {version}")
        text = entry.read_text(encoding="utf-8")
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        found[version] = Migration(version, m.group(2), text, checksum)
    return [found[v] for v in sorted(found)]


async def _applied(ex: Executor) -> dict[int, str]:
    if not int(await ex.fetchval("migration.table_exists")):
        return {}
    return {int(r["version"]): r["checksum"] for r in await ex.fetch("migration.applied")}


def _check(applied: dict[int, str], migrations: list[Migration], dialect: str) -> None:
    for mig in migrations:
        have = applied.get(mig.version)
        if have is not None and have != mig.checksum:
            raise MigrationError(
                f"{dialect} migration {mig.version:04d}_{mig.name} was changed after it was applied "
                f"(checksum {have[:12]} in the database, {mig.checksum[:12]} in the file)"
            )


async def schema_state(ex: Executor) -> SchemaState:
    migrations = load_migrations(ex.dialect)
    applied = await _applied(ex)
    _check(applied, migrations, ex.dialect)
    return SchemaState(
        current=max(applied, default=0),
        latest=max((m.version for m in migrations), default=0),
    )


async def migrate(ex: Executor) -> list[int]:
    """Apply pending migrations; returns the versions applied (empty if up to date)."""
    migrations = load_migrations(ex.dialect)
    async with ex.transaction() as tx:
        await tx.fetchval("migration.lock")
        await tx.execute("migration.ensure_table")
        applied = await _applied(tx)
        _check(applied, migrations, ex.dialect)
        done: list[int] = []
        for mig in migrations:
            if mig.version in applied:
                continue
            await tx.execute_script(mig.sql)
            await tx.execute(
                "migration.record",
                {
                    "version": mig.version,
                    "name": mig.name,
                    "checksum": mig.checksum,
                    "applied_at": codec.to_ms(utcnow()),
                },
            )
            done.append(mig.version)
    return done
