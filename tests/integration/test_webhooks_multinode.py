"""Two real `mailrelay serve` processes on one PostgreSQL share the webhook outbox (issue #11 §3):
a burst of mail submitted over SMTP to both nodes, every recipient deferred once by the loopback
MX and then delivered, so each recipient has two events written by whichever node delivered it.
Both nodes' senders claim from the one outbox and POST to one real endpoint that verifies the
signatures: every event arrives, none twice (the normal case: no node dies), and each recipient's
events arrive in the order they happened (``deferred`` before ``delivered``, event ids rising).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.webhook_receiver import Receiver
from tests.integration.delivery_harness import free_port
from tests.integration.fault_harness import Load, ServeProcess

pytestmark = pytest.mark.slow

SECRET = "multinode-webhook-secret-0123456789"
PER_NODE = 40


@pytest.fixture
async def mx() -> AsyncIterator[ScriptedMx]:
    seen: set[str] = set()

    def first_try_deferred(stage: str, rcpt: str) -> str | None:
        # every recipient's first delivery attempt is deferred: a `deferred` event, then `delivered`
        if stage != "DOT" or rcpt in seen:
            return None
        seen.add(rcpt)
        return "451 4.7.1 try again shortly"

    async with ScriptedMx("127.0.0.2", free_port("127.0.0.2"), hook=first_try_deferred) as m:
        yield m


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_two_serve_processes_share_the_outbox(tmp_path: Path, storage_url: str, mx: ScriptedMx,
                                                    receiver: Receiver) -> None:
    overrides = {"webhooks.poll": "100ms", "webhooks.retry_initial": "200ms", "webhooks.retry_max": "1s",
                 "webhooks.allow_private_addresses": True}  # the receiver is on 127.0.0.1
    nodes = [ServeProcess.create(tmp_path / f"node{i}", relayhost=f"127.0.0.2:{mx.port}", storage_url=storage_url,
                                 overrides={**overrides, "node.name": f"node-{i}"}, add_user=i == 1)
             for i in (1, 2)]
    out = nodes[0].cli("webhooks", "add", "--account", "acme", receiver.url, "--events", "deferred,delivered",
                       "--secret", SECRET)
    hook_id = int(next(line for line in out.splitlines() if line.startswith("id: "))[4:])
    receiver.secrets[hook_id] = SECRET
    receiver.delay = 0.005  # a realistic endpoint: both nodes find work while the other waits
    loads = [Load(n.smtp_port, clients=2, limit=PER_NODE, prefix=f"n{i}w") for i, n in enumerate(nodes, 1)]
    try:
        for n in nodes:
            n.start()
        await asyncio.gather(*(n.wait_ready() for n in nodes))
        for load in loads:
            load.start()
        await asyncio.gather(*(load.finished(120) for load in loads))
        expected = {(email_id, f"{token}@example.com") for load in loads for token, email_id in load.acked.items()}
        assert len(expected) == 2 * PER_NODE
        try:
            await receiver.wait_for(2 * len(expected), 120)
        except TimeoutError:
            kinds = Counter(e["status"]["message_status"] for e in receiver.events)
            raise AssertionError(f"{len(set(receiver.ids()))} of {2 * len(expected)} events: {kinds}; "
                                 f"MX got {len(mx.messages)} messages; node logs: "
                                 f"{nodes[0].log_tail(15)}\n{nodes[1].log_tail(15)}") from None
        await asyncio.sleep(1.0)  # anything sent twice would arrive meanwhile
    finally:
        for load in loads:
            await load.stop()
        for n in nodes:
            n.ensure_stopped()
    assert receiver.bad_signatures == 0
    per_event = Counter(receiver.ids())
    assert max(per_event.values()) == 1, f"sent twice: {[i for i, c in per_event.items() if c > 1][:10]}"
    got: dict[tuple[str, str], list[str]] = {}
    by_address: dict[str, list[int]] = {}
    for e in receiver.events:
        got.setdefault((e["message_id"], e["to"]), []).append(e["status"]["message_status"])
        by_address.setdefault(e["to"], []).append(int(e["event_id"]))
    assert set(got) == expected  # every recipient's events arrived, and no others
    assert all(kinds == ["deferred", "delivered"] for kinds in got.values()), got
    # per recipient: in the outbox's order
    assert all(ids == sorted(ids) for ids in by_address.values()), by_address
    assert len({m.rcpt for m in mx.messages}) == len(expected)
    logs = [n.log.read_text(errors="replace") for n in nodes]
    print(f"two nodes: {len(per_event)} events, {receiver.posts} POSTs, max in flight {receiver.max_in_flight}")
    assert all("Traceback" not in log for log in logs), logs
