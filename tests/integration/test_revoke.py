"""`mailrelay users revoke` / `users rotate-key`, run as separate processes (as an operator does),
apply to the very next SMTP AUTH of a running server, also when that server's cache was warm, on
SQLite and on PostgreSQL; HTTP Basic refuses at once too; an authenticated session may finish its
transaction but cannot start another. (Two `serve` processes on one PostgreSQL:
``test_multinode_processes.py``.)"""

from __future__ import annotations

import asyncio
import base64
import sys

import aiohttp
import aiosmtplib
import pytest

from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest


async def cli(relay: RelayUnderTest, *argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", *argv, "--home", str(relay.home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def auth_code(relay: RelayUnderTest, user: str, key: str) -> int:
    c = aiosmtplib.SMTP(hostname=relay.host, port=relay.port, start_tls=False, timeout=20)
    await c.connect()
    await c.ehlo()
    try:
        return (await c.login(user, key)).code
    except aiosmtplib.SMTPAuthenticationError as e:
        return e.code
    finally:
        c.close()


async def http_status(relay: RelayUnderTest, user: str, key: str) -> int:
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    basic = base64.b64encode(f"{user}:{key}".encode()).decode()
    async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/v1/messages/NOSUCHID",
                                                   headers={"Authorization": f"Basic {basic}"}) as r:
        return r.status


@pytest.fixture(params=["sqlite", "postgres"])
async def relay(request: pytest.FixtureRequest, relay_factory: RelayFactory) -> RelayUnderTest:
    return await relay_factory({"http.listen": "127.0.0.1:0"}, backend=request.param)


async def test_revoke_applies_to_the_next_auth(relay: RelayUnderTest) -> None:
    await relay.add_user("u1", "u1-key-0123456789")
    assert await auth_code(relay, "u1", "u1-key-0123456789") == 235
    assert await auth_code(relay, "u1", "u1-key-0123456789") == 235  # answered from the warm cache
    assert await http_status(relay, "u1", "u1-key-0123456789") == 404  # authenticated: no such message
    session = await relay.client(user="u1", key="u1-key-0123456789")
    await session.mail("app@acme.example")  # a transaction open when the revoke comes

    assert (await cli(relay, "users", "revoke", "u1")).strip() == "revoked u1"

    assert await auth_code(relay, "u1", "u1-key-0123456789") == 535
    assert await http_status(relay, "u1", "u1-key-0123456789") == 401
    # the open transaction may finish ...
    assert (await session.rcpt("someone@example.com")).code == 250
    _, reply = await session.data("Subject: last\r\n\r\nx\r\n")
    assert reply.startswith("2.0.0 Ok: queued as")
    # ... but the session starts no other
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await session.mail("app@acme.example")
    assert refused.value.code == 421  # and closed: a new AUTH is needed
    assert await auth_code(relay, relay.api_user, relay.key) == 235  # other users are not affected


async def test_a_new_key_applies_to_the_next_auth(relay: RelayUnderTest) -> None:
    await relay.add_user("u2", "u2-old-key-0123456789")
    assert await auth_code(relay, "u2", "u2-old-key-0123456789") == 235  # warms the cache

    out = await cli(relay, "users", "rotate-key", "u2")
    new_key = out.splitlines()[-1]
    assert new_key and new_key != "u2-old-key-0123456789"

    assert await auth_code(relay, "u2", "u2-old-key-0123456789") == 535
    assert await http_status(relay, "u2", "u2-old-key-0123456789") == 401
    assert await auth_code(relay, "u2", new_key) == 235
    assert await http_status(relay, "u2", new_key) == 404  # authenticated: no such message

    await cli(relay, "users", "rotate-key", "u2", "--key", "u2-chosen-key-0123")
    assert await auth_code(relay, "u2", new_key) == 535
    assert await auth_code(relay, "u2", "u2-chosen-key-0123") == 235
