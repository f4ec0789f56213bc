"""``custom_args`` end to end (issue #11 §3, EngageLab docs/email/rest-api/deliverlies: "custom_args
object, optional fields customized by the customer, at most 1KB"; docs/email/webhook/webhook:
"custom_args json, customer-defined fields" in every callback), on SQLite and PostgreSQL: given to
POST /v1/mail/send, to /v1/mail/send_mime (field or header) or over SMTP as the
``X-Mailrelay-Custom-Args`` header, stored with the message (migration 0016) and carried by every
webhook event of its recipients, refused ones included; the header never reaches the recipient;
a bad value is a 400 or a 550 that says why, and nothing is sent."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import pytest

from storage.records import ListKind, SuppressionEntry
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.webhook_receiver import Receiver
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import wait_until
from tests.integration.test_http_send import Sender, _open

SECRET = "custom-args-secret-0123456789"
ARGS = {"order": "1042", "nested": {"k": [1, 2.5, True, None]}, "名": "値"}


@pytest.fixture(params=["sqlite", "postgres"])
async def both(request: pytest.FixtureRequest, relay_factory: RelayFactory, sink: ScriptedMx) -> AsyncIterator[Sender]:
    async for s in _open(relay_factory, sink, request.param):
        yield s


def _mail(to: list[str], **top: Any) -> dict[str, Any]:
    return {"from": "news@acme.example", "to": to, "body": {"subject": "Hi", "content": {"text": "hello"}}, **top}


def _mime(headers: str = "") -> str:
    return base64.b64encode(f"From: news@acme.example\r\nSubject: mime\r\n{headers}\r\nbody\r\n".encode()).decode()


async def test_custom_args_reach_every_event_of_the_message(both: Sender, receiver: Receiver) -> None:
    status, hook = await both.post("/v1/webhooks", {"url": receiver.url, "events": ["delivered", "invalid"],
                                                    "secret": SECRET})
    assert status == 201, hook
    receiver.secrets[hook["id"]] = SECRET
    await both.relay.storage.suppressions.add([SuppressionEntry(account_id=both.relay.account_id,
                                                                kind=ListKind.BLOCK, value="blocked@example.com")])
    status, answer = await both.post("/v1/mail/send", _mail(["one@example.com", "blocked@example.com"],
                                                            custom_args=ARGS))
    assert status == 200 and len(answer["email_ids"]) == 1 and len(answer["refused"]) == 1, answer
    status, answer = await both.post("/v1/mail/send_mime", {"from": "news@acme.example", "to": ["m1@example.com"],
                                                            "mime": _mime(), "custom_args": {"via": "field"}})
    assert status == 200, answer
    status, answer = await both.post("/v1/mail/send_mime", {
        "from": "news@acme.example", "to": ["m2@example.com"],
        "mime": _mime('X-Mailrelay-Custom-Args: {"via": "mime header"}\r\n')})
    assert status == 200, answer
    c = await both.relay.client()
    await c.sendmail("news@acme.example", ["smtp@example.com"],
                     'From: news@acme.example\r\nX-Mailrelay-Custom-Args: {"source": "smtp", "n": 7}\r\n'
                     "Subject: over SMTP\r\n\r\nbody\r\n")
    await c.quit()

    await receiver.wait_for(5, 30)
    got = {e["to"]: (e["status"]["message_status"], e["custom_args"]) for e in receiver.events}
    assert got == {"one@example.com": ("delivered", ARGS), "blocked@example.com": ("invalid", ARGS),
                   "m1@example.com": ("delivered", {"via": "field"}),
                   "m2@example.com": ("delivered", {"via": "mime header"}),
                   "smtp@example.com": ("delivered", {"source": "smtp", "n": 7})}
    assert receiver.bad_signatures == 0
    await wait_until(lambda: len(both.sink.messages) == 4)
    for m in both.sink.messages:  # the header is ours: read and removed, never delivered
        assert b"custom-args" not in m.content.lower(), m.content[:400]


async def test_bad_custom_args_are_refused_and_nothing_is_sent(both: Sender) -> None:
    cases: list[tuple[Any, str]] = [
        ([1, 2], "custom_args: expected a JSON object"),
        ("order=1", "custom_args: expected a JSON object"),
        ({"k": "x" * 1100}, "custom_args: 1108 bytes of JSON: at most 1024"),
        ({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "custom_args: nested deeper than 5 levels"),
    ]
    for value, message in cases:
        status, answer = await both.post("/v1/mail/send", _mail(["one@example.com"], custom_args=value))
        assert status == 400 and answer["message"] == message, (value, answer)
    status, answer = await both.post("/v1/mail/send_mime", {"from": "news@acme.example", "to": ["m@example.com"],
                                                            "mime": _mime("X-Mailrelay-Custom-Args: order=1\r\n")})
    assert status == 400 and answer["message"].startswith("X-Mailrelay-Custom-Args header: not JSON"), answer
    c = await both.relay.client()
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await c.sendmail("news@acme.example", ["smtp@example.com"],
                         "From: news@acme.example\r\nX-Mailrelay-Custom-Args: [1]\r\nSubject: s\r\n\r\nbody\r\n")
    assert refused.value.code == 550
    assert refused.value.message.startswith("5.6.0 X-Mailrelay-Custom-Args must be a JSON object of at most 1 KB")
    await c.quit()
    status, answer = await both.post("/v1/mail/send", _mail(["last@example.com"]))
    assert status == 200
    await wait_until(lambda: len(both.sink.messages) >= 1)
    assert [m.rcpt for m in both.sink.messages] == ["last@example.com"]  # none of the refused ones
