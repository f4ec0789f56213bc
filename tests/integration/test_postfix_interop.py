"""Interop: our delivery stage hands a message to a real Postfix (the Debian package) acting as the MX.

Chain: harness (fake clock, loopback DNS: ``pf.test MX 10 mx.pf.test``, ``mx.pf.test A 127.0.0.1``)
-> private Postfix on 127.0.0.1:<port> (``tests/helpers/postfix.py``) -> relayhost: a ScriptedMx
sink on 127.0.0.2. Postfix relays asynchronously, so the sink is polled (real time, bounded).
A missing Postfix is a failure, not a skip (``scripts/system-deps.sh`` installs it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay import verp
from storage.protocols import Storage
from storage.records import LogKind, Status
from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.postfix import PrivatePostfix, postfix_unavailable
from tests.integration.delivery_harness import DeliveryHarness, free_port, make_harness

pytestmark = pytest.mark.slow

DOMAIN = "pf.test"
RETURN_DOMAIN = "fb.relay.test"
BODY = (b"Subject: postfix interop\r\nFrom: app@acme.example\r\nTo: someone@pf.test\r\n\r\n"
        b"hello through a real Postfix\r\n.a line that starts with a dot\r\nbye\r\n")


async def _relayed(sink: ScriptedMx, timeout: float) -> bool:
    """Wait (real time, bounded) until the sink got a message: Postfix relays on its own schedule."""
    deadline = time.monotonic() + timeout
    while not sink.messages:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
async def sink() -> AsyncIterator[ScriptedMx]:
    server = ScriptedMx("127.0.0.2", 0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def postfix(sink: ScriptedMx) -> AsyncIterator[PrivatePostfix]:
    reason = postfix_unavailable()
    if reason:
        pytest.fail(f"the Postfix interop test needs the Debian postfix package: {reason}", pytrace=False)
    pf = PrivatePostfix(port=free_port("127.0.0.1"), relay_to=sink.address, domains=[DOMAIN])
    try:
        await asyncio.to_thread(pf.start)
        yield pf
    finally:
        await asyncio.to_thread(pf.stop)


@pytest.fixture
async def dns() -> AsyncIterator[LoopbackDns]:
    server = LoopbackDns()
    await server.start()
    server.add_mx(DOMAIN, [(10, "mx.pf.test")])
    server.add_a("mx.pf.test", "127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
async def h(tmp_path: Path, storage: Storage, dns: LoopbackDns,
            postfix: PrivatePostfix) -> AsyncIterator[DeliveryHarness]:
    harness = await make_harness(tmp_path, storage, dns, postfix.port, {"feedback.domains": [RETURN_DOMAIN]})
    yield harness
    await harness.close()


async def test_delivers_to_postfix_as_the_mx(h: DeliveryHarness, postfix: PrivatePostfix, sink: ScriptedMx,
                                            tmp_path: Path) -> None:
    rcpt = f"someone@{DOMAIN}"
    email_id = await h.submit(rcpt, body=BODY)
    await h.step()

    row = await h.status(email_id, rcpt)
    attempts = [e for e in row.log if e.kind is LogKind.ATTEMPT]
    assert row.status == Status.DELIVERED, f"{row}\n--- postfix log ---\n{postfix.log_tail()}"
    assert len(attempts) == 1, row.log
    attempt = attempts[0]
    assert attempt.code == 250 and "queued as" in attempt.text, attempt  # Postfix's own reply
    assert attempt.mx_host == "mx.pf.test" and attempt.mx_ip == "127.0.0.1", attempt

    assert await _relayed(sink, 20), f"Postfix did not relay within 20 s\n--- postfix log ---\n{postfix.log_tail()}"
    await asyncio.sleep(0.2)  # a duplicate relay would show up here
    assert len(sink.messages) == 1, sink.messages
    msg = sink.messages[0]
    secret = (tmp_path / "verp.key").read_text().strip()
    assert msg.mail_from == verp.encode(email_id, rcpt, RETURN_DOMAIN, bytes.fromhex(secret))
    assert msg.rcpts == (rcpt,)
    # Postfix prepends its Received: header (and may add missing ones); our message follows unchanged
    assert b"Received: " in msg.content and b"by mx.pf.test (Postfix)" in msg.content, msg.content
    assert msg.content.endswith(BODY.split(b"\r\n\r\n", 1)[1]), msg.content
    for header in BODY.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        assert header + b"\r\n" in msg.content, (header, msg.content)
    queue_id = attempt.text.split("queued as", 1)[1].strip().split()[0]
    assert queue_id.encode() in msg.content, (queue_id, msg.content)  # the same Postfix queue file
