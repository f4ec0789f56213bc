"""Fixtures that start a real mailrelay on loopback (SQLite by default, PostgreSQL where asked)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.webhook_receiver import Receiver
from tests.integration.delivery_harness import free_port
from tests.integration.relay_fixture import RelayUnderTest, start_relay

if TYPE_CHECKING:
    from tests.integration.test_http_api import Api

PG_DSN = os.environ.get("MAILRELAY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def _create_pg_database() -> tuple[str, str]:
    name = f"mr_it_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = PG_DSN.rpartition("/")
    return name, f"{base}/{name}"


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


RelayFactory = Callable[..., Awaitable[RelayUnderTest]]


@pytest.fixture
async def relay_factory(tmp_path: Path) -> AsyncIterator[RelayFactory]:
    started: list[RelayUnderTest] = []
    databases: list[str] = []

    async def make(overrides: dict[str, Any] | None = None, *, backend: str = "sqlite",
                   allow_plain_auth: bool = True) -> RelayUnderTest:
        home = tmp_path / f"home{len(started)}"
        if backend == "postgres":
            name, url = await _create_pg_database()
            databases.append(name)
        else:
            url = f"sqlite:///{home / 'mailrelay.sqlite3'}"
        relay = await start_relay(home, url, overrides=overrides, allow_plain_auth=allow_plain_auth)
        started.append(relay)
        return relay

    yield make
    for relay in started:
        await relay.app.stop(grace=2)
    for name in databases:
        await _drop_pg_database(name)


@pytest.fixture
async def relay(relay_factory: RelayFactory) -> RelayUnderTest:
    return await relay_factory()


@pytest.fixture(params=["sqlite", "postgres"])
async def any_backend_relay(request: pytest.FixtureRequest, relay_factory: RelayFactory) -> RelayUnderTest:
    return await relay_factory(backend=request.param)


@pytest.fixture
async def tls_relay(relay_factory: RelayFactory) -> RelayUnderTest:
    return await relay_factory(allow_plain_auth=False)


# A delivery site on loopback (delivery_harness tests): example.test's MX hosts mx1 (127.0.0.2) and
# mx2 (127.0.0.3) in a loopback DNS server, and a scripted MX on 127.0.0.2 at the relay's MX port.
@pytest.fixture
async def dns() -> AsyncIterator[LoopbackDns]:
    server = LoopbackDns()
    await server.start()
    server.add_mx("example.test", [(10, "mx1.example.test"), (20, "mx2.example.test")])
    server.add_a("mx1.example.test", "127.0.0.2")
    server.add_a("mx2.example.test", "127.0.0.3")
    yield server
    server.stop()


@pytest.fixture
def mx_port() -> int:
    return free_port()


@pytest.fixture
async def mx(mx_port: int) -> AsyncIterator[ScriptedMx]:
    server = ScriptedMx("127.0.0.2", mx_port)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def sink() -> AsyncIterator[ScriptedMx]:
    """A scripted MX on 127.0.0.2 that accepts everything (use as the relay host)."""
    mx = ScriptedMx("127.0.0.2", free_port())
    await mx.start()
    yield mx
    await mx.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real aiohttp webhook endpoint on 127.0.0.1 (tests/helpers/webhook_receiver.py)."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


# The HTTP API under test, seeded (tests/integration/test_http_api.py builds it): on both backends,
# and on SQLite only for the tests of request handling that do not depend on the storage.
@pytest.fixture(params=["sqlite", "postgres"])
async def api(request: pytest.FixtureRequest, relay_factory: RelayFactory) -> AsyncIterator[Api]:
    from tests.integration.test_http_api import HTTP, open_api  # imports this module: not at the top

    relay = await relay_factory(HTTP, backend=request.param)
    async for a in open_api(relay):
        yield a


@pytest.fixture
async def sqlite_api(relay_factory: RelayFactory) -> AsyncIterator[Api]:
    from tests.integration.test_http_api import HTTP, open_api

    relay = await relay_factory(HTTP)
    async for a in open_api(relay):
        yield a
