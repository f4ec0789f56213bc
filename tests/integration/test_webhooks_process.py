"""Webhooks end to end with real processes and sockets: mail submitted over SMTP to a real
`mailrelay serve`, delivered to a loopback MX, its ``delivered`` events POSTed to a loopback
endpoint that verifies their signatures. A kill -9 in the middle of the burst loses no event
(the outbox is written in the status update's transaction); resends after the restart are
allowed and counted. Two nodes on one PostgreSQL share the outbox without sending an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.webhooks.sender import SenderSettings, WebhookSender
from storage import SqlStorage, open_storage
from storage.records import LogEntry, LogKind, MessageRecord, RecipientOutcome, Status, SubmissionRecord
from storage.webhooks import DEFAULT_EVENTS
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.webhook_receiver import Receiver
from tests.integration.delivery_harness import free_port
from tests.integration.fault_harness import Load, ServeProcess
from tests.integration.relay_fixture import wait_until

pytestmark = pytest.mark.slow

SECRET = "process-test-secret-0123456789"


@pytest.fixture
async def mx() -> AsyncIterator[ScriptedMx]:
    async with ScriptedMx("127.0.0.2", free_port("127.0.0.2")) as m:
        yield m


async def test_kill_dash_nine_in_a_burst_loses_no_event(tmp_path: Path, storage_url: str, mx: ScriptedMx,
                                                        receiver: Receiver) -> None:
    relay = ServeProcess.create(tmp_path / "home", relayhost=f"127.0.0.2:{mx.port}", storage_url=storage_url,
                                overrides={"webhooks.poll": "100ms", "webhooks.retry_initial": "200ms",
                                           "webhooks.retry_max": "1s",
                                           "webhooks.allow_private_addresses": True})  # receiver on 127.0.0.1
    out = relay.cli("webhooks", "add", "--account", "acme", receiver.url, "--events", "delivered",
                    "--secret", SECRET)
    hook_id = int(next(line for line in out.splitlines() if line.startswith("id: "))[4:])
    assert out.splitlines()[-1] == f"secret: {SECRET}"
    receiver.secrets[hook_id] = SECRET
    load = Load(relay.smtp_port, clients=4, pace=0.01)
    try:
        relay.start()
        await relay.wait_ready()
        load.start()
        await wait_until(lambda: len(receiver.events) >= 30, 30)  # events flowing: kill in the middle
        relay.kill()
        relay.start()
        await relay.wait_ready()
        await asyncio.sleep(1.0)
        await load.stop()
        expected = {f"{token}@example.com" for token in load.acked}
        delivered = lambda: {e["to"] for e in receiver.events}  # noqa: E731
        await wait_until(lambda: expected <= delivered(), 90)
        shown = json.loads(relay.cli("webhooks", "show", str(hook_id), "--json"))
    finally:
        await load.stop()
        relay.ensure_stopped()
    per_event = Counter(receiver.ids())
    resent = sum(n - 1 for n in per_event.values() if n > 1)
    per_rcpt = Counter(e["to"] for e in {e["event_id"]: e for e in receiver.events}.values())
    print(f"webhooks kill -9: {len(load.acked)} mails answered 250, {len(per_event)} delivered events received, "
          f"{resent} resent after the kill, {sum(1 for n in per_rcpt.values() if n > 1)} recipients with "
          f"more than one event (mail delivered again after the kill), {receiver.posts} POSTs")
    assert len(load.acked) > 50, "too little load to prove anything"
    assert receiver.bad_signatures == 0
    assert all(e["status"]["message_status"] == "delivered" and e["webhook_id"] == hook_id for e in receiver.events)
    assert shown["sent"] >= len(expected) and shown["state"] == "active"


async def test_two_nodes_share_the_outbox_without_sending_an_event_twice(storage_url: str,
                                                                         receiver: Receiver) -> None:
    settings = SenderSettings(timeout=5.0, concurrency=4, retry_initial=0.1, retry_max=1.0, poll=0.05,
                              allow_private=True)
    st1, st2 = await open_storage(storage_url), await open_storage(storage_url)
    tasks: list[asyncio.Task[None]] = []
    try:
        await st1.migrate()
        acct = await st1.accounts.ensure_account("acme")
        hook = await st1.webhooks.add(acct.id, receiver.url, DEFAULT_EVENTS, SECRET, 1, datetime.now(UTC))
        receiver.secrets[hook.id] = SECRET
        receiver.delay = 0.005  # a realistic endpoint: both nodes get work while the other waits
        s1, s2 = WebhookSender(st1, "node-1", settings), WebhookSender(st2, "node-2", settings)
        tasks = [asyncio.create_task(s1.run()), asyncio.create_task(s2.run())]
        rcpts = [f"r{i}@example.com" for i in range(400)]
        t0 = datetime.now(UTC)
        msg = MessageRecord(email_id="MSG2", account_id=acct.id, api_user="app1", sender="a@shop.example",
                            subject="s", label=None, email_type=None, size=1, request_time=t0,
                            request_ip="192.0.2.1", node="node-1")
        await st1.statuses.record_submissions([SubmissionRecord(msg, tuple(RecipientOutcome(r, Status.SENDING)
                                                                           for r in rcpts))])

        async def deliver(st: SqlStorage, part: list[str]) -> None:
            for r in part:
                await st.statuses.update_status("MSG2", r, Status.DELIVERED, None, "250 ok",
                                                LogEntry(at=t0, kind=LogKind.ATTEMPT, text="250 ok", code=250))

        await asyncio.gather(deliver(st1, rcpts[::2]), deliver(st2, rcpts[1::2]))  # both nodes write events
        await receiver.wait_for(400, 60)

        async def drained() -> bool:
            return await st1.webhooks.outbox_size() == 0

        await wait_until(drained, 30)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await st1.close()
        await st2.close()
    per_event = Counter(receiver.ids())
    assert len(per_event) == 400 and max(per_event.values()) == 1, "an event was sent twice"
    assert s1.posts > 20 and s2.posts > 20, f"one node did all the work: {s1.posts} / {s2.posts}"
    assert receiver.bad_signatures == 0
