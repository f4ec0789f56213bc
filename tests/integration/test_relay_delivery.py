"""The whole server: SMTP submission → spool → delivery through a relay host → status rows;
queue control over the control socket, as `mailrelay queues` uses it."""

from __future__ import annotations

import asyncio

import pytest

from relay.control import call
from storage import open_storage
from storage.records import LogKind, Status
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until


async def _relay(factory: RelayFactory, sink: ScriptedMx) -> RelayUnderTest:
    return await factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                          "delivery.ehlo_name": "relay.test"})



async def test_submitted_mail_is_delivered_and_recorded(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    c = await relay.client()
    body = "Subject: e2e\r\nX-Label: l1\r\n\r\n.dot line\r\nbye\r\n"
    _, msg = await c.sendmail("app@acme.example", ["one@example.com", "two@example.org"], body)
    await c.quit()
    email_id = msg.rsplit(" ", 1)[1]

    async def both_delivered() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return len(rows) == 2 and all(r.status == Status.DELIVERED for r in rows)

    await wait_until(both_delivered)
    assert sorted(m.rcpt for m in sink.messages) == ["one@example.com", "two@example.org"]
    content = sink.messages[0].content
    assert b"X-Label" not in content and b"\r\n.dot line\r\n" in content
    rows = await relay.storage.statuses.get_message(email_id)
    for r in rows:
        attempts = [e for e in r.log if e.kind is LogKind.ATTEMPT]
        assert attempts[-1].code == 250 and attempts[-1].mx_ip == "127.0.0.2"
        assert r.send_ip == "127.0.0.1"
    assert relay.app.spool is not None
    await wait_until(lambda: (not list(relay.app.spool.enumerate())))  # type: ignore[union-attr]



async def test_queue_control_over_the_socket(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    sock = relay.cfg.path(relay.cfg.node.control_socket)
    c = await relay.client()
    await c.sendmail("app@acme.example", ["a@example.com"], "Subject: 1\r\n\r\nx\r\n")
    await wait_until(lambda: (len(sink.messages) == 1))
    views = await call(sock, "queues.list")
    assert [(v["api_user"], v["domain"]) for v in views] == [("app1", "example.com")]
    assert views[0]["try_rate"]["5s"] > 0 and views[0]["out_rate"]["30s"] > 0

    paused = await call(sock, "queues.pause", {"api_user": "app1", "domain": "example.com"})
    assert paused["status"] == "paused" and paused["pause_reason"] == "admin"
    await c.sendmail("app@acme.example", ["b@example.com"], "Subject: 2\r\n\r\nx\r\n")
    await asyncio.sleep(1.2)
    assert len(sink.messages) == 1  # held while paused
    shown = await call(sock, "queues.show", {"api_user": "app1", "domain": "example.com"})
    assert [m["recipient"] for m in shown["messages"]] == ["b@example.com"]
    rated = await call(sock, "queues.rate", {"api_user": "app1", "domain": "example.com", "rate": 5})
    assert rated["max_rate"] == 5
    await call(sock, "queues.recover", {"api_user": "app1", "domain": "example.com"})
    await wait_until(lambda: (len(sink.messages) == 2))
    await c.quit()
    with pytest.raises(RuntimeError, match="no queue"):
        await call(sock, "queues.pause", {"api_user": "app1", "domain": "nope.example"})


async def test_sigterm_finishes_attempts_in_flight(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    sink.set(delay=1.0, delay_on={"DOT"})
    c = await relay.client()
    _, msg = await c.sendmail("app@acme.example", ["slow@example.com"], "Subject: s\r\n\r\nx\r\n")
    await c.quit()
    email_id = msg.rsplit(" ", 1)[1]
    await wait_until(lambda: (bool(sink.connections)))
    await asyncio.sleep(0.2)
    await relay.app.stop(grace=5)  # the attempt in flight completes and is recorded
    assert len(sink.messages) == 1
    storage = await open_storage(relay.cfg.storage.url)
    try:
        rows = await storage.statuses.get_message(email_id)
        assert [r.status for r in rows] == [Status.DELIVERED]
    finally:
        await storage.close()
    assert relay.app.spool is not None and not list(relay.app.spool.enumerate())
