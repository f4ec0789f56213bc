"""The `target` webhook event (migration 0017; EngageLab's "Email request successful"): a real
endpoint on loopback gets `target` for a recipient accepted over SMTP, then its `delivered`; a
recipient refused at RCPT gets none, nor does a webhook that did not ask for it. SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage.records import ListKind, Status, SuppressionEntry
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.webhook_receiver import Receiver
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import wait_until
from tests.integration.test_http_send import Sender, _open

SECRET = "target-secret-0123456789"


@pytest.fixture(params=["sqlite", "postgres"])
async def both(request: pytest.FixtureRequest, relay_factory: RelayFactory, sink: ScriptedMx) -> AsyncIterator[Sender]:
    async for s in _open(relay_factory, sink, request.param):
        yield s


async def _hook(s: Sender, receiver: Receiver, events: list[str]) -> int:
    status, hook = await s.post("/v1/webhooks", {"url": receiver.url, "events": events, "secret": SECRET})
    assert status == 201, hook
    assert hook["events"] == events
    receiver.secrets[hook["id"]] = SECRET
    return int(hook["id"])


async def test_target_then_delivered_for_an_accepted_recipient(both: Sender, receiver: Receiver) -> None:
    wants = await _hook(both, receiver, ["target", "delivered", "invalid"])
    others = await _hook(both, receiver, ["delivered", "invalid"])  # did not ask for target
    await both.relay.storage.suppressions.add([SuppressionEntry(account_id=both.relay.account_id,
                                                                kind=ListKind.BLOCK, value="blocked@example.com")])
    c = await both.relay.client()
    refused, _ = await c.sendmail("news@acme.example", ["ok@example.com", "blocked@example.com"],
                                  'From: news@acme.example\r\nX-Mailrelay-Custom-Args: {"order": "9"}\r\n'
                                  "Subject: target\r\n\r\nbody\r\n")
    await c.quit()
    assert list(refused) == ["blocked@example.com"] and refused["blocked@example.com"][0] == 550

    # wants: target + delivered (ok@), invalid (blocked@); others: delivered + invalid
    await receiver.wait_for(5, 30)
    await wait_until(lambda: len(both.sink.messages) == 1)

    async def drained() -> bool:  # every event sent and settled: none still to come
        return await both.relay.storage.webhooks.outbox_size() == 0

    await wait_until(drained, 30)
    assert receiver.bad_signatures == 0
    seen: dict[tuple[int, str], list[str]] = {}
    for e in receiver.events:
        seen.setdefault((e["webhook_id"], e["to"]), []).append(e["status"]["message_status"])
    assert seen == {(wants, "ok@example.com"): ["target", "delivered"], (wants, "blocked@example.com"): ["invalid"],
                    (others, "ok@example.com"): ["delivered"], (others, "blocked@example.com"): ["invalid"]}

    target = next(e for e in receiver.events if e["status"]["message_status"] == "target")
    delivered = next(e for e in receiver.events if e["webhook_id"] == wants and e["to"] == "ok@example.com"
                     and e["status"]["message_status"] == "delivered")
    email_id = f"{target['message_id']}$ok@example.com"
    assert (target["server"], target["from"], target["subject"], target["custom_args"]) == (
        "email", "news@acme.example", "target", {"order": "9"})
    data = target["status"]["status_data"]
    assert data["email_id"] == email_id and data["email_ids"] == [email_id] and data["tos"] == ["ok@example.com"]
    assert data["message"] == "successfully request" and data["status"] == int(Status.SENDING)
    assert data["api_user"] == both.relay.api_user
    assert target["message_id"] == delivered["message_id"]
    assert target["event_id"] < delivered["event_id"] and target["itime"] <= delivered["itime"]
