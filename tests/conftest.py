"""Shared test fixtures.

Storage
-------
``storage``        an opened and migrated Storage, parametrised over ``sqlite`` and ``postgres``.
``storage_url``    the URL behind it (a fresh, not yet opened database per test).
``empty_storage_url``  a fresh database with NO schema (migration tests), both backends.

PostgreSQL comes from ``MAILRELAY_TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
A template database is migrated once per session; each test gets ``CREATE DATABASE x TEMPLATE
tmpl`` (procrastinate's trick: fast and fully isolated), dropped afterwards. An unreachable
PostgreSQL is a test failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from storage import SqlStorage, default_sqlite_url, open_storage

T = TypeVar("T")

PG_DSN = os.environ.get("MAILRELAY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in a private thread, so sync fixtures can
    do async setup whether or not a test loop is running."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="fixture-setup")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def _pg_dsn_for(database: str) -> str:
    parts = urlsplit(PG_DSN)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _pg_admin(*statements: str) -> None:
    conn = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


def _create_pg_database(template: str) -> str:
    name = f"mailrelay_t_{uuid.uuid4().hex[:16]}"
    _run_sync(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    return name


def _drop_pg_database(name: str) -> None:
    _run_sync(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, built once per test session."""
    name = f"mailrelay_tmpl_{os.getpid()}"

    async def build() -> None:
        try:
            await _pg_admin(
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'CREATE DATABASE "{name}" TEMPLATE template0',
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            pytest.fail(
                f"PostgreSQL is required for the storage tests and is not usable at {PG_DSN}: {exc!r} "
                "(start it, or point MAILRELAY_TEST_PG_DSN at one)",
                pytrace=False,
            )
        st = await open_storage(_pg_dsn_for(name))
        try:
            await st.migrate()
        finally:
            await st.close()

    _run_sync(build())
    yield name
    _drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture
def storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database per test: SQLite in tmp_path, PostgreSQL cloned from the template."""
    if backend == "sqlite":
        yield default_sqlite_url(tmp_path / "data")
        return
    template: str = request.getfixturevalue("pg_template")
    name = _create_pg_database(template)
    try:
        yield _pg_dsn_for(name)
    finally:
        _drop_pg_database(name)


@pytest.fixture
def empty_storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    if backend == "sqlite":
        yield default_sqlite_url(tmp_path / "empty")
        return
    request.getfixturevalue("pg_template")  # fails clearly when PostgreSQL is unreachable
    name = _create_pg_database("template0")
    try:
        yield _pg_dsn_for(name)
    finally:
        _drop_pg_database(name)


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[SqlStorage]:
    """An opened, migrated Storage (sqlite and postgres)."""
    st = await open_storage(storage_url)
    try:
        await st.migrate()
        yield st
    finally:
        await st.close()


# region network guard: tests may only talk to loopback (127.0.0.0/8, ::1) and Unix sockets.
import ipaddress as _ipaddress  # noqa: E402
import socket as _socket  # noqa: E402


def _loopback_only(address: object) -> None:
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        host = address[0]
        try:
            ip = _ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            if host != "localhost":
                raise OSError(f"test network guard: {host!r} is not a loopback address") from None
            return
        if not ip.is_loopback:
            raise OSError(f"test network guard: {host} is not a loopback address")


class _GuardedSocket(_socket.socket):
    def connect(self, address):  # type: ignore[no-untyped-def]
        _loopback_only(address)
        return super().connect(address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        _loopback_only(address)
        return super().connect_ex(address)

    def sendto(self, *args):  # type: ignore[no-untyped-def]
        _loopback_only(args[-1])
        return super().sendto(*args)


_socket.socket = _GuardedSocket  # type: ignore[misc]
# endregion


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """A CLI test that runs ``main()`` in process installs a handler on that test's captured stderr;
    put the root logger back so later tests do not log into a closed stream."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# region the feedback corpus table in the terminal summary (tests/unit/feedback/fb_scoring.py)
# With pytest-xdist the corpus test runs in a worker: its table comes back in the worker's output.
_worker_fb_summaries: list[list[str]] = []


def _fb_summary() -> list[str]:
    import sys

    return list(getattr(sys.modules.get("fb_scoring"), "SUMMARY", None) or [])


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the table to the main process
        workeroutput["fb_summary"] = _fb_summary()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    lines = getattr(node, "workeroutput", {}).get("fb_summary")
    if lines:
        _worker_fb_summaries.append(list(lines))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = _fb_summary() or next(iter(_worker_fb_summaries), [])
    if lines:
        terminalreporter.write_sep("-", "feedback parser corpus")
        for line in lines:
            terminalreporter.write_line(line)
# endregion
