"""`queues recover` means now: a recipient waiting on its retry timer is sent at once, and the
reply says how many recipients were released — through the CLI (control socket) and the HTTP API."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from relay.cli import main
from storage.records import Status
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until

ADMIN = "recover-admin-token-0123456789"


async def _deferred(relay: RelayUnderTest, sink: ScriptedMx, rcpts: list[str]) -> str:
    """Submit one message whose recipients the MX defers; wait until each waits on its retry timer."""
    sink.set(rcpt="451 4.3.0 try again later")
    c = await relay.client()
    _, msg = await c.sendmail("app@acme.example", rcpts, "Subject: r\r\n\r\nx\r\n")
    await c.quit()
    email_id = msg.rsplit(" ", 1)[1]

    assert relay.app.scheduler is not None
    sched = relay.app.scheduler

    def waiting() -> bool:
        q = sched.find_queue("app1", "example.com")
        items = sched.waiting_items(q) if q is not None else []
        return len(items) == len(rcpts) and all(i.attempts == 1 and "451 4.3.0" in i.last_reason for i in items)

    await wait_until(waiting)
    q = sched.find_queue("app1", "example.com")
    assert q is not None and all(i.next_at > time.time() + 30 for i in sched.waiting_items(q))  # 1st retry: 1m
    sink.set(rcpt=None)  # the MX accepts again; nothing is sent before the timer ... unless recovered
    return email_id


async def _delivered(relay: RelayUnderTest, email_id: str) -> None:
    async def done() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return all(r.status is Status.DELIVERED for r in rows)

    await wait_until(done, timeout=3.0)  # "within a second or two", nowhere near the 1 minute timer


async def _relay(factory: RelayFactory, sink: ScriptedMx) -> RelayUnderTest:
    return await factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                          "delivery.ehlo_name": "relay.test", "http.listen": "127.0.0.1:0",
                          "http.admin_token": ADMIN})


async def test_recover_over_the_cli_sends_a_deferred_recipient_now(
        relay_factory: RelayFactory, sink: ScriptedMx, capsys: pytest.CaptureFixture[str]) -> None:
    relay = await _relay(relay_factory, sink)
    email_id = await _deferred(relay, sink, ["a@example.com", "b@example.com"])
    accepted = len(sink.messages)
    await asyncio.sleep(0.5)
    assert len(sink.messages) == accepted  # still waiting on the timer
    capsys.readouterr()
    rc = await asyncio.to_thread(main, ["queues", "recover", "--home", str(relay.home), "--api-user", "app1",
                                        "--domain", "Example.com"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.splitlines()[0] == "recovered app1/example.com: released 2 recipients"
    await _delivered(relay, email_id)
    assert sorted(m.rcpt for m in sink.messages[accepted:]) == ["a@example.com", "b@example.com"]
    # nothing left waiting: a second recover releases nothing, and says so in JSON too
    rc = await asyncio.to_thread(main, ["queues", "recover", "--home", str(relay.home), "--api-user", "app1",
                                        "--domain", "example.com", "--json"])
    out, _ = capsys.readouterr()
    assert rc == 0 and json.loads(out)["released"] == 0
    rc = await asyncio.to_thread(main, ["queues", "recover", "--home", str(relay.home), "--api-user", "app1",
                                        "--domain", "nope.example"])
    assert rc == 1 and "no queue" in capsys.readouterr().err


async def test_recover_over_http_releases_timers_and_pauses(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    email_id = await _deferred(relay, sink, ["c@example.com"])
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    base = f"http://{host}:{port}/v1/queues/app1/example.com"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/pause", headers=auth) as r:  # paused and on a timer: both lifted
            assert r.status == 200
        async with http.post(base + "/recover", headers=auth) as r:
            body = await r.json()
        assert r.status == 200, body
        result = body.get("result", body)
        assert result["released"] == 1 and result["status"] != "paused"
        await _delivered(relay, email_id)
