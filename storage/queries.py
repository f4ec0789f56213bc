"""Named SQL queries: one text (``sql/queries.sql``) plus small per-dialect overrides.

File format (procrastinate style)::

    -- name: status.insert
    -- mode: columnar            (optional, postgres overrides only; see below)
    -- any other full-line comment is a description and is dropped
    INSERT INTO ... VALUES (:email_id, :recipient, ...)

Parameters are written ``:name``. SQLite (``sqlite3``) takes them natively; for asyncpg they are
rewritten to ``$1..$n`` once, here, at load time, and :class:`Query` keeps the name order so the
executor can turn a params mapping into positional arguments.

``-- mode: columnar`` marks a PostgreSQL query whose ``executemany`` is run as ONE statement with
one array per parameter (``unnest(:email_id::text[], ...)``); the executor transposes the rows.

Guarantees: an override that names a query missing from ``queries.sql`` is an error at load time,
so a typo cannot silently fall back to the common text. List-valued parameters are arrays on
PostgreSQL and JSON text on SQLite (read with ``json_each``); the executors do that conversion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from storage.errors import StorageError

DIALECTS = ("sqlite", "postgres")

_NAME_LINE = re.compile(r"^--\s*name:\s*([A-Za-z0-9_.]+)\s*$")
_MODE_LINE = re.compile(r"^--\s*mode:\s*([a-z]+)\s*$")
# single-quoted literal | '::' cast | :param
_TOKEN = re.compile(r"'(?:[^']|'')*'|::|:([A-Za-z_][A-Za-z0-9_]*)")
_WHERE_SLOT = "{where}"


class QueryError(StorageError):
    """The query files are malformed, or an unknown query was asked for."""


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    sql: str  # dialect-ready text (``:name`` for sqlite, ``$n`` for postgres)
    params: tuple[str, ...]  # parameter names in ``$n`` order (postgres); names used (sqlite)
    write: bool  # anything but SELECT goes to the writer (SQLite routing)
    columnar: bool = False

    def args(self, values: Mapping[str, Any] | None) -> list[Any]:
        """Positional arguments for asyncpg from a params mapping."""
        mapping = values or {}
        try:
            return [mapping[n] for n in self.params]
        except KeyError as exc:
            raise QueryError(f"query {self.name}: missing parameter {exc.args[0]!r}") from None


@dataclass(frozen=True, slots=True)
class _Raw:
    name: str
    sql: str
    columnar: bool


def parse(text: str, source: str = "<sql>") -> dict[str, _Raw]:
    """Split one queries file into named blocks."""
    out: dict[str, _Raw] = {}
    name: str | None = None
    columnar = False
    body: list[str] = []

    def flush() -> None:
        if name is None:
            return
        sql = "\n".join(body).strip().rstrip(";").strip()
        if not sql:
            raise QueryError(f"{source}: query {name} is empty")
        if name in out:
            raise QueryError(f"{source}: query {name} defined twice")
        out[name] = _Raw(name, sql, columnar)

    for line in text.splitlines():
        stripped = line.strip()
        m = _NAME_LINE.match(stripped)
        if m:
            flush()
            name, columnar, body = m.group(1), False, []
            continue
        mode = _MODE_LINE.match(stripped)
        if mode and name is not None and not body:
            if mode.group(1) != "columnar":
                raise QueryError(f"{source}: query {name}: unknown mode {mode.group(1)!r}")
            columnar = True
            continue
        if stripped.startswith("--"):
            continue  # description
        if name is None:
            if stripped:
                raise QueryError(f"{source}: SQL before the first '-- name:' line")
            continue
        body.append(line.rstrip())
    flush()
    return out


def to_positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """Rewrite ``:name`` placeholders to ``$n`` (same name -> same number)."""
    order: list[str] = []

    def repl(m: re.Match[str]) -> str:
        pname = m.group(1)
        if pname is None:
            return m.group(0)  # literal or '::' cast
        if pname not in order:
            order.append(pname)
        return f"${order.index(pname) + 1}"

    return _TOKEN.sub(repl, sql), tuple(order)


def named_params(sql: str) -> tuple[str, ...]:
    seen: list[str] = []
    for m in _TOKEN.finditer(sql):
        if m.group(1) and m.group(1) not in seen:
            seen.append(m.group(1))
    return tuple(seen)


def _is_write(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return head not in ("SELECT", "WITH", "VALUES")


def _build(raw: _Raw, dialect: str, where: str | None = None) -> Query:
    sql = raw.sql
    if _WHERE_SLOT in sql:
        sql = sql.replace(_WHERE_SLOT, where if where is not None else "1 = 1")
    if dialect == "postgres":
        text, params = to_positional(sql)
    else:
        if raw.columnar:
            raise QueryError(f"query {raw.name}: columnar mode is for postgres only")
        text, params = sql, named_params(sql)
    return Query(raw.name, text, params, _is_write(sql), raw.columnar)


@dataclass
class Queries:
    """All queries of one dialect, ready to run."""

    dialect: str
    _raw: dict[str, _Raw]
    _built: dict[str, Query] = field(default_factory=dict)
    _rendered: dict[tuple[str, str], Query] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Query:
        q = self._built.get(name)
        if q is None:
            raise QueryError(f"unknown query {name!r}")
        return q

    def __contains__(self, name: object) -> bool:
        return name in self._built

    def names(self) -> list[str]:
        return sorted(self._built)

    def render(self, name: str, where: str) -> Query:
        """Fill the ``{where}`` slot of a template query (only ``storage.search`` calls this,
        with fragments from its fixed vocabulary). Cached: the set of fragments is finite."""
        key = (name, where)
        q = self._rendered.get(key)
        if q is None:
            raw = self._raw.get(name)
            if raw is None or _WHERE_SLOT not in raw.sql:
                raise QueryError(f"query {name!r} is not a search template")
            q = _build(raw, self.dialect, where)
            if len(self._rendered) > 1024:
                self._rendered.clear()
            self._rendered[key] = q
        return q


def _read(fname: str) -> str | None:
    res = resources.files("storage").joinpath("sql", fname)
    return res.read_text(encoding="utf-8") if res.is_file() else None


def load_queries(dialect: str) -> Queries:
    """Load ``queries.sql`` and apply ``queries.<dialect>.sql``; fail on unknown overrides."""
    base_text = _read("queries.sql")
    if base_text is None:
        raise QueryError("storage/sql/queries.sql is missing")
    return build_queries(dialect, base_text, {d: _read(f"queries.{d}.sql") for d in DIALECTS})


def build_queries(dialect: str, base_text: str, override_texts: Mapping[str, str | None]) -> Queries:
    """Build the queries of ``dialect`` from the common text and every dialect's override text.

    Every override file is validated, not only the one in use, so a typo in the other dialect's
    file also fails start-up (and the test suite)."""
    if dialect not in DIALECTS:
        raise QueryError(f"unknown dialect {dialect!r}")
    base = parse(base_text, "queries.sql")
    overrides: dict[str, dict[str, _Raw]] = {}
    for d, text in override_texts.items():
        fname = f"queries.{d}.sql"
        over = parse(text, fname) if text is not None else {}
        unknown = sorted(set(over) - set(base))
        if unknown:
            raise QueryError(f"{fname} overrides unknown queries: {', '.join(unknown)}")
        overrides[d] = over
    merged = {**base, **overrides.get(dialect, {})}
    queries = Queries(dialect, merged)
    for name, raw in merged.items():
        queries._built[name] = _build(raw, dialect)
    return queries
