"""Sending over HTTP (issue #11 §2): real HTTP requests to POST /v1/mail/send and /v1/mail/send_mime,
delivered through the relay to a scripted MX, on SQLite and PostgreSQL; the MIME parsed as a mail
client would; the same suppression reasons, limits and status rows as SMTP."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import aiohttp
import aiosmtplib
import pytest

from policies import REASON_BLOCK, REASON_UNSUBSCRIBE
from storage.records import ListKind, Status, SubStatus, SuppressionEntry
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until
from tests.integration.test_http_api import ADMIN, HTTP, basic

PDF = b"%PDF-1.4\n\x00\x01\x02binary\xff\xfe attachment body\n"


@dataclass
class Sender:
    relay: RelayUnderTest
    sink: ScriptedMx
    session: aiohttp.ClientSession
    base: str
    auth: dict[str, str]

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.session.post(self.base + path, json=body, headers=headers or self.auth) as r:
            assert r.content_type == "application/json", await r.text()
            return r.status, await r.json()

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(self.base + path, params=params, headers=self.auth) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    def delivered(self) -> list[EmailMessage]:
        return [message_from_bytes(m.content, policy=default) for m in self.sink.messages]  # type: ignore[misc]


async def _open(factory: RelayFactory, sink: ScriptedMx, backend: str = "sqlite",
                **overrides: Any) -> AsyncIterator[Sender]:
    relay = await factory({**HTTP, "delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                           "delivery.ehlo_name": "relay.test", **overrides}, backend=backend)
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        yield Sender(relay, sink, session, f"http://{host}:{port}", basic(relay.api_user, relay.key))


@pytest.fixture(params=["sqlite", "postgres"])
async def both(request: pytest.FixtureRequest, relay_factory: RelayFactory, sink: ScriptedMx) -> AsyncIterator[Sender]:
    async for s in _open(relay_factory, sink, request.param):
        yield s


@pytest.fixture
async def http(relay_factory: RelayFactory, sink: ScriptedMx) -> AsyncIterator[Sender]:
    async for s in _open(relay_factory, sink):
        yield s


def _mail(**body: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"from": "Shop <news@acme.example>", "to": ["one@example.com"],
                           "body": {"subject": "Hello", "content": {"text": "plain body"}}}
    top = {k: body.pop(k) for k in ("from", "to", "request_id", "custom_args") if k in body}
    out["body"].update(body)
    out.update(top)
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_send_delivers_the_mime_with_ids_and_status_rows(both: Sender) -> None:
    body = _mail(
        to=["one@example.com", "Zoë <two@example.org>"], cc=["copy@example.com"], bcc=["hidden@example.net"],
        reply_to=["Support <help@acme.example>"], settings={"send_mode": 1},
        subject="Grüße — 你好 ✓", content={"text": "Grüße in plain text\r\n", "html": "<p>Grüße <b>html</b></p>"},
        headers={"X-Label": "promo", "X-Campaign": "spring"},
        attachments=[{"content": _b64(PDF), "filename": "rapport été.pdf"},
                     {"content": _b64(b"a,b\r\n1,2\r\n"), "filename": "t.csv", "type": "text/csv"}])
    status, answer = await both.post("/v1/mail/send", body)
    assert status == 200, answer
    assert answer["refused"] == [] and answer["request_id"] is None
    ids = answer["email_ids"]
    message_id = ids[0].split("$")[0]
    assert ids == [f"{message_id}${r}" for r in ("one@example.com", "two@example.org", "copy@example.com",
                                                 "hidden@example.net")]
    await wait_until(lambda: len(both.sink.messages) == 4)
    assert sorted(m.rcpt for m in both.sink.messages) == ["copy@example.com", "hidden@example.net",
                                                          "one@example.com", "two@example.org"]
    assert {m.mail_from for m in both.sink.messages} != {""}
    msg = both.delivered()[0]
    assert msg["Subject"] == "Grüße — 你好 ✓"
    raw_head = both.sink.messages[0].content.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in raw_head and "Grüße".encode() not in raw_head  # RFC 2047 on the wire
    assert msg["To"] == "one@example.com, Zoë <two@example.org>" and msg["Cc"] == "copy@example.com"
    assert msg["Bcc"] is None and msg["Reply-To"] == "Support <help@acme.example>"
    assert msg["X-Label"] is None and msg["X-Campaign"] == "spring"
    assert msg["Message-ID"] == f"<{message_id.lower()}@relay.test>"
    received = msg.get_all("Received")[0]
    assert "with HTTP id " + message_id in received and "(Authenticated sender: app1)" in received
    assert msg.get_content_type() == "multipart/mixed"
    alternative, pdf, csv = msg.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    text, html = alternative.iter_parts()
    assert text.get_content().replace("\r\n", "\n") == "Grüße in plain text\n"
    assert text["Content-Transfer-Encoding"] == "8bit"
    assert html.get_content_type() == "text/html" and "Grüße <b>html</b>" in html.get_content()
    assert pdf.get_content_type() == "application/pdf" and pdf.get_filename() == "rapport été.pdf"
    assert pdf.get_content() == PDF and pdf.get_content_disposition() == "attachment"
    assert csv.get_content_type() == "text/csv" and csv.get_filename() == "t.csv"

    async def delivered() -> bool:
        page = await both.get("/v1/email_status", email_ids=";".join(ids))
        return page["total"] == 4 and all(r["status"] == int(Status.DELIVERED) for r in page["result"])

    await wait_until(delivered)
    page = await both.get("/v1/email_status", email_ids=ids[1])
    (row,) = page["result"]
    assert row["email_id"] == ids[1] and row["api_user"] == "app1" and row["label"] == "promo"
    assert row["subject"] == "Grüße — 你好 ✓" and row["request_ip"] == "127.0.0.1"


async def test_per_recipient_messages_substitute_vars(http: Sender) -> None:
    body = _mail(to=["ann@example.com", "bob@example.com"], subject="Hi %name%",
                 content={"html": "<html><body><p>Code %code% for %name%</p></body></html>",
                          "preview_text": "For %name%"},
                 vars={"%name%": ["Ann", "Bob"], "code": [1234, "B-2"]})
    status, answer = await http.post("/v1/mail/send", body)
    assert status == 200, answer
    ids = answer["email_ids"]
    assert [i.split("$")[1] for i in ids] == ["ann@example.com", "bob@example.com"]
    assert ids[0].split("$")[0] != ids[1].split("$")[0]  # one message each
    await wait_until(lambda: len(http.sink.messages) == 2)
    by_rcpt = {m.rcpt: message_from_bytes(m.content, policy=default) for m in http.sink.messages}
    bob = by_rcpt["bob@example.com"]
    assert bob["Subject"] == "Hi Bob" and bob["To"] == "bob@example.com"
    assert bob.get_content_type() == "text/html"
    content = bob.get_content()  # type: ignore[attr-defined]
    assert "Code B-2 for Bob" in content
    assert content.index('<div style="display:none') < content.index("<p>")  # the hidden preheader first
    assert ">For Bob</div>" in content
    assert by_rcpt["ann@example.com"]["Subject"] == "Hi Ann"


async def test_suppressed_recipients_are_refused_with_the_smtp_reasons(both: Sender) -> None:
    st, account_id = both.relay.storage, both.relay.account_id
    await st.suppressions.add([
        SuppressionEntry(account_id=account_id, kind=ListKind.BLOCK, value="blocked@example.com"),
        SuppressionEntry(account_id=account_id, kind=ListKind.UNSUBSCRIBE, value="gone@example.com")])
    status, answer = await both.post("/v1/mail/send", _mail(to=["ok@example.com", "blocked@example.com",
                                                                "gone@example.com"]))
    assert status == 200
    assert [i.split("$")[1] for i in answer["email_ids"]] == ["ok@example.com"]
    refused = {r["email"]: r for r in answer["refused"]}
    assert refused["blocked@example.com"]["reason"] == REASON_BLOCK
    assert refused["blocked@example.com"]["sub_status"] == int(SubStatus.BLACKLIST)
    assert refused["gone@example.com"]["reason"] == REASON_UNSUBSCRIBE
    # the same recipients over SMTP: the same reasons in the replies
    c = await both.relay.client()
    await c.mail("news@acme.example")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused_over_smtp:
        await c.rcpt("blocked@example.com")
    assert refused_over_smtp.value.code == 550 and REASON_BLOCK in refused_over_smtp.value.message
    await c.quit()
    rows = await both.get("/v1/email_status", email_ids=refused["blocked@example.com"]["email_id"])
    (row,) = rows["result"]
    assert row["status"] == int(Status.INVALID) and row["sub_status"] == int(SubStatus.BLACKLIST)
    assert row["reason"] == REASON_BLOCK

    status, answer = await both.post("/v1/mail/send", _mail(to=["blocked@example.com"]))
    assert status == 200 and answer["email_ids"] == []  # every recipient refused: an answer, not an error
    assert [r["reason"] for r in answer["refused"]] == [REASON_BLOCK]
    await wait_until(lambda: len(both.sink.messages) == 1)
    await asyncio.sleep(0.3)
    assert [m.rcpt for m in both.sink.messages] == ["ok@example.com"]


async def test_request_id_retry_sends_once(both: Sender) -> None:
    body = _mail(to=["once@example.com"], request_id="order-42")
    first = await both.post("/v1/mail/send", body)
    assert first[0] == 200 and first[1]["request_id"] == "order-42"
    again = await both.post("/v1/mail/send", body)
    assert again == first
    other_user_key = "other-key-0123456789"
    await both.relay.add_user("app2", other_user_key)
    status, answer = await both.post("/v1/mail/send", body, basic("app2", other_user_key))
    assert status == 200 and answer["email_ids"] != first[1]["email_ids"]  # request ids are per API_USER
    await wait_until(lambda: len(both.sink.messages) == 2)
    await asyncio.sleep(0.5)
    assert len(both.sink.messages) == 2


async def test_rate_limit_is_the_api_users(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    async for s in _open(relay_factory, sink, **{"limits.messages_per_second": 0.01, "limits.messages_burst": 2}):
        status, answer = await s.post("/v1/mail/send", _mail(to=["a@example.com", "b@example.com",
                                                                 "c@example.com"]))
        assert status == 429 and "rate limit" in answer["message"]  # 3 messages, 2 tokens: none sent
        assert (await s.post("/v1/mail/send", _mail(to=["a@example.com", "b@example.com"])))[0] == 200
        c = await s.relay.client()  # the same budget over SMTP
        with pytest.raises(Exception, match="451"):
            await c.sendmail("news@acme.example", ["c@example.com"], "Subject: x\r\n\r\nx\r\n")


async def test_bad_input_is_a_400_and_sends_nothing(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    async for s in _open(relay_factory, sink, **{"limits.max_message_size": 4096}):
        cases: list[tuple[dict[str, Any], str]] = [
            (_mail(attachments=[{"content": _b64(b"x" * 5000), "filename": "big.bin"}]), "over the size limit"),
            (_mail(subject="Hi\r\nBcc: victim@example.com"), "body.subject: CR, LF"),
            (_mail(headers={"X-Tag": "a\nBcc: victim@example.com"}), "body.headers.X-Tag: CR, LF"),
            (_mail(**{"from": "Evil\r\nBcc: v@example.com <news@acme.example>"}), "from: CR, LF"),
            (_mail(attachments=[{"content": _b64(PDF), "filename": "a\r\nb.pdf"}]),
             "body.attachments[0].filename: CR, LF"),
            (_mail(attachments=[{"content": "not base64!!", "filename": "a.pdf"}]),
             "body.attachments[0].content: not valid base64"),
            (_mail(to=["not an address"]), "to[0]: invalid address"),
            (_mail(to=[f"r{i}@example.com" for i in range(101)]), "to: 101 addresses: at most 100"),
            (_mail(cc=["c@example.com"]), "body.cc: only with settings.send_mode 1"),
            (_mail(vars={"name": ["a", "b"]}), "body.vars.name: 2 values for 1 to recipients"),
            (_mail(subject="Hi %name%", vars={"name": ["x\r\nBcc: v@example.com"]}), "body.vars.name: a value for"),
            (_mail(headers={"From": "x@example.com"}), "body.headers.From: set by the request's own fields"),
            (_mail(settings={"open_tracking": True}), "body.settings.open_tracking: track_opens is off"),
            (_mail(colour="red"), "body.colour: unknown field"),
            ({**_mail(), "sender": "x"}, "sender: unknown field of POST /v1/mail/send"),
            (_mail(label_id="999"), "body.label_id: no label 999"),
            (_mail(headers={"X-Email-Type": "spam"}), "email type header"),
        ]
        for body, expected in cases:
            status, answer = await s.post("/v1/mail/send", body)
            assert status == 400 and expected in answer["message"], (expected, answer)
        assert s.relay.app.spool is not None
        assert list(s.relay.app.spool.enumerate()) == []
        async with s.session.post(s.base + "/v1/mail/send", json=_mail(), headers=ADMIN) as r:
            assert r.status == 403  # operators have no API_USER to send as
        await asyncio.sleep(0.3)
        assert s.sink.messages == []


async def test_send_mime_takes_the_same_path(both: Sender) -> None:
    mime = ("From: App <app@acme.example>\r\nTo: x@example.com\r\nSubject: raw one\r\nX-Label: raw\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße from MIME\r\n.leading dot\r\n").encode()
    status, answer = await both.post("/v1/mail/send_mime", {"from": "bounce@acme.example",
                                                             "to": ["x@example.com", "y@example.com"],
                                                             "mime": _b64(mime), "request_id": "m-1"})
    assert status == 200, answer
    assert [i.split("$")[1] for i in answer["email_ids"]] == ["x@example.com", "y@example.com"]
    message_id = answer["email_ids"][0].split("$")[0]
    await wait_until(lambda: len(both.sink.messages) == 2)
    got = both.sink.messages[0]
    assert got.mail_from != "" and got.content.endswith(b"\r\n\r\nGr\xc3\xbc\xc3\x9fe from MIME\r\n.leading dot\r\n")
    msg = message_from_bytes(got.content, policy=default)
    assert msg["Subject"] == "raw one" and msg["X-Label"] is None
    assert msg["Message-ID"] == f"<{message_id.lower()}@relay.test>"
    assert "with HTTP id " + message_id in msg["Received"]
    status, answer = await both.post("/v1/mail/send_mime", {"from": "a@acme.example", "to": ["x@example.com"],
                                                             "mime": "no header block", "mime_encoding": "text"})
    assert status == 400 and "mime: not an RFC 5322 message" in answer["message"]
