"""What the MX receives from us (one new ``Received:`` on top, a Message-ID at our configured name)
and what a recipient's ``reason`` says: a deferral's last reply; a DSN's reply once, not doubled."""

from __future__ import annotations

import asyncio
import json
import sys
from email import message_from_bytes
from email.policy import compat32

import aiosmtplib

from storage.records import Status, SubStatus
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until
from tests.integration.test_feedback_loop import _deliver_one, _dsn, _send
from tests.integration.test_feedback_loop import _relay as _feedback_relay


async def _relay(factory: RelayFactory, sink: ScriptedMx) -> RelayUnderTest:
    return await factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                          "delivery.ehlo_name": "out.relay.test"})


async def _submit(relay: RelayUnderTest, rcpts: list[str], body: str, *, starttls: bool) -> str:
    c = aiosmtplib.SMTP(hostname=relay.host, port=relay.port, local_hostname="client.test", start_tls=False,
                        timeout=20)
    await c.connect()
    await c.ehlo()
    if starttls:
        await c.starttls(tls_context=relay.client_tls_context())
    await c.login(relay.api_user, relay.key)
    _, msg = await c.sendmail("app@acme.example", rcpts, body)
    await c.quit()
    return msg.rsplit(" ", 1)[1]


def _headers(content: bytes) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in message_from_bytes(content, policy=compat32).items()]


async def test_one_received_on_top_and_message_id_at_the_configured_name(relay_factory: RelayFactory,
                                                                         sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    # over STARTTLS, one recipient, no Message-ID, a Received from an earlier hop already there
    email_id = await _submit(relay, ["one@example.com"],
                             "Received: from earlier.hop by client.test; Thu, 3 Dec 2026 08:00:00 +0000\r\n"
                             "Subject: trace\r\n\r\nhello\r\n", starttls=True)
    await wait_until(lambda: len(sink.messages) == 1)
    content = sink.messages[0].content
    headers = _headers(content)
    assert content.startswith(b"Received: from client.test ([127.0.0.1])\r\n")
    received = [v for k, v in headers if k.lower() == "received"]
    assert len(received) == 2 and "earlier.hop" in received[1]  # ours is new and on top
    ours = " ".join(received[0].split())
    assert ours.startswith(f"from client.test ([127.0.0.1]) (Authenticated sender: {relay.api_user}) "
                           f"by relay.test (mailrelay) with ESMTPSA id {email_id} for <one@example.com>; ")
    assert ours.endswith("+0000")
    assert relay.key.encode() not in content
    assert dict(headers)["Message-ID"] == f"<{email_id.lower()}@relay.test>"  # smtp.hostname, not the machine's

    # in the clear, two recipients: ESMTPA, no "for" (it would show each the other); a Message-ID is kept
    await _submit(relay, ["a@example.com", "b@example.com"], "Message-ID: <own@acme.example>\r\n\r\nx\r\n",
                  starttls=False)
    await wait_until(lambda: len(sink.messages) == 3)
    for m in sink.messages[1:]:
        headers = _headers(m.content)
        received = [v for k, v in headers if k.lower() == "received"]
        assert len(received) == 1 and " with ESMTPA id " in received[0] and "for <" not in received[0]
        assert [v for k, v in headers if k.lower() == "message-id"] == ["<own@acme.example>"]


async def test_a_deferred_recipient_shows_the_last_reply_as_its_reason(relay_factory: RelayFactory,
                                                                       sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    sink.set(rcpt="451 4.7.1 Greylisted, try again in 5 minutes")
    email_id = await _submit(relay, ["grey@example.com"], "Subject: later\r\n\r\nx\r\n", starttls=False)

    async def deferred() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return bool(rows) and bool(rows[0].reason)

    await wait_until(deferred)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "status", "search", "--home", str(relay.home), "--account", "acme",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    (rec,) = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert rec["status"] == int(Status.SENDING)
    assert rec["reason"] == "451 4.7.1 Greylisted, try again in 5 minutes"
    assert rec["log"][-1]["code"] == 451


async def test_a_dsn_reason_is_its_reply_once(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _feedback_relay(relay_factory, sink)
    email_id, return_path = await _deliver_one(relay, sink, "x@example.com")
    dsn = _dsn(return_path, "x@example.com", diag="smtp; 550 5.1.1 <x@example.com>: user unknown")
    await asyncio.to_thread(_send, relay, return_path, dsn)

    async def bounced() -> bool:
        return (await relay.storage.statuses.get_message(email_id))[0].status == Status.SOFT_BOUNCE

    await wait_until(bounced)
    row = (await relay.storage.statuses.get_message(email_id))[0]
    assert row.sub_status == SubStatus.SB_NOT_EXIST
    assert row.reason == "550 5.1.1 <x@example.com>: user unknown"
    assert row.log[-1].text == "bounce: 550 5.1.1 <x@example.com>: user unknown"
