"""Open and click tracking end to end, on both backends: a real relay delivers through the loopback
DNS to a scripted MX; the HTML part's links are rewritten and an open pixel added before the DKIM
signature (dkimpy verifies); real HTTP requests follow the links; the events show in
/v1/messages, /v1/email_status and `mailrelay status search --json`; mail that cannot be rewritten
is delivered with its body byte for byte."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP, default
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.cli import main
from storage.records import AccountSettings
from storage.webhooks import WebhookEvent
from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.webhook_receiver import Receiver
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until
from tests.integration.test_dkim_delivery import publish, verify
from tests.integration.test_unsubscribe import api_get, delivered, events, http, recipient_overrides, send

__all__ = ["http"]  # the fixture

LINK = "https://shop.example/p/1?a=1&b=2"
ATTACHMENT = bytes(range(256)) * 4


@pytest.fixture(params=["sqlite", "postgres"])
async def relay(request: pytest.FixtureRequest, relay_factory: RelayFactory, dns: LoopbackDns,
                mx_port: int) -> RelayUnderTest:
    r = await relay_factory(recipient_overrides(dns, mx_port), backend=request.param)
    await r.storage.accounts.set_settings(r.account_id, AccountSettings(True, True, True))
    return r


def newsletter(extra_header: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Shop <news@acme.example>"
    msg["To"] = "user@example.test"
    msg["Subject"] = "Grüße: this week"
    msg["Date"] = "Thu, 03 Dec 2026 09:00:00 +0000"
    msg["Message-ID"] = "<n1@acme.example>"
    if extra_header:
        name, value = extra_header.split(": ")
        msg[name] = value
    msg.set_content(f"Hello, see {LINK}\n", cte="quoted-printable")
    msg.add_alternative(
        "<html><head><title>x</title></head><body><p>Grüße, <a class='b' href='https://shop.example/p/1?a=1&amp;b=2'>"
        "the offer</a>, <a href=\"mailto:help@acme.example\">help</a>, "
        "<a data-mailrelay-notrack href=\"https://acme.example/legal\">legal</a></p></body></html>\n",
        subtype="html", cte="quoted-printable")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="octet-stream", filename="price list.bin")
    return msg.as_bytes(policy=SMTP)


def html_part(content: bytes) -> tuple[str, EmailMessage]:
    msg = message_from_bytes(content, policy=default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(("html",))
    assert body is not None
    return body.get_content(), msg


async def test_links_rewritten_signed_followed_and_recorded(
        relay: RelayUnderTest, mx: ScriptedMx, dns: LoopbackDns, http: aiohttp.ClientSession) -> None:
    await publish(relay.storage, dns, "acme.example")
    email_id = await send(relay, "user@example.test", newsletter())
    content = await delivered(mx, 1)
    assert b"\n" not in content.replace(b"\r\n", b"")  # CRLF throughout
    assert await verify(dns, content)  # rewritten before signing: the signature covers the new body
    text, msg = html_part(content)
    base = relay.cfg.web.public_url
    clicks = re.findall(rf'href="({re.escape(base)}/c/[^"]+)"', text)
    opens = re.findall(rf'<img src="({re.escape(base)}/o/[^"]+)"', text)
    assert len(clicks) == 1 and len(opens) == 1, text
    assert "Grüße" in text and 'href="mailto:help@acme.example"' in text
    assert 'href="https://acme.example/legal"' in text  # data-mailrelay-notrack
    assert text.index(opens[0]) < text.index("</body>")
    plain = msg.get_body(("plain",))
    assert plain is not None and plain.get_content() == f"Hello, see {LINK}\r\n"  # untouched
    attachment = next(msg.iter_attachments())
    assert attachment.get_content() == ATTACHMENT and attachment.get_filename() == "price list.bin"
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "application/octet-stream"]

    async with http.get(clicks[0], allow_redirects=False, headers={"User-Agent": "Reader/1.0"}) as r:
        assert r.status == 302 and r.headers["Location"] == LINK
    async with http.get(opens[0], headers={"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/gif"
        assert "no-store" in r.headers["Cache-Control"] and (await r.read()).startswith(b"GIF89a")
    token = clicks[0].rpartition("/")[2]
    for bad in (f"{base}/c/{token[:-1]}A" if not token.endswith("A") else f"{base}/c/{token[:-1]}B",
                f"{base}/o/{token}", f"{base}/c/", f"{base}/c/{token}/x"):
        async with http.get(bad, allow_redirects=False) as r:
            assert r.status == 404 and "Location" not in r.headers, bad
    async with http.get(f"{clicks[0]}?url=https://evil.example", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == LINK  # a parameter never chooses the target

    async def both() -> bool:
        return {e["type"] for e in await events(http, relay, email_id)} >= {"click", "open"}

    await wait_until(both, timeout=10)
    got = await events(http, relay, email_id)
    first_click = next(e for e in got if e["type"] == "click")  # the events are in time order
    assert first_click["link"] == LINK and first_click["user_agent"] == "Reader/1.0"
    assert first_click["ip"] == "127.0.0.1" and first_click["machine"] is False
    assert first_click["kind"] == "feedback" and first_click["time"]
    opened = next(e for e in got if e["type"] == "open")
    assert opened["machine"] is True and opened["link"] is None
    day = first_click["time"][:10]
    search = await api_get(http, relay, f"/v1/email_status?email_ids={email_id}&send_date={day}")
    assert {e["type"] for r in search["result"] for e in r["events"]} >= {"click", "open"}


async def test_status_search_cli_shows_events(relay: RelayUnderTest, mx: ScriptedMx,
                                              http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]) -> None:
    email_id = await send(relay, "user@example.test", newsletter())
    text, _ = html_part(await delivered(mx, 1))
    m = re.search(r'href="(http://[^"]+/c/[^"]+)"', text)
    assert m is not None
    async with http.get(m.group(1), allow_redirects=False) as r:
        assert r.status == 302

    async def clicked() -> bool:
        return any(e["type"] == "click" for e in await events(http, relay, email_id))

    await wait_until(clicked, timeout=10)
    rc = await asyncio.to_thread(main, ["status", "search", "--home", str(relay.home), "--account", "acme",
                                        "--email", "user@example.test", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    ev = [e for row in rows for e in row["events"] if e["type"] == "click"]
    assert ev and ev[0]["link"] == LINK


async def test_click_reaches_the_accounts_webhook(relay: RelayUnderTest, mx: ScriptedMx,
                                                 http: aiohttp.ClientSession) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        hook = await relay.storage.webhooks.add(relay.account_id, receiver.url, (WebhookEvent.CLICK,), "k3y", 1,
                                                datetime.now(UTC))
        receiver.secrets[hook.id] = "k3y"
        email_id = await send(relay, "user@example.test", newsletter())
        text, _ = html_part(await delivered(mx, 1))
        m = re.search(r'href="(http://[^"]+/c/[^"]+)"', text)
        assert m is not None
        async with http.get(m.group(1), allow_redirects=False, headers={"User-Agent": "Reader/2.0"}) as r:
            assert r.status == 302
        await receiver.wait_for(1, timeout=15)
    finally:
        await receiver.stop()
    [ev] = receiver.events  # only the click: the webhook wants no delivered event
    assert (ev["message_id"], ev["to"], ev["status"]["message_status"]) == (email_id, "user@example.test", "click")
    data = ev["status"]["status_data"]
    assert (data["url"], data["message"], data["ip"], data["user_agent"], data["machine"]) == (
        LINK, LINK, "127.0.0.1", "Reader/2.0", False)
    assert receiver.bad_signatures == 0


def _body(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[1]


def signed_mail() -> bytes:
    return (b"From: news@acme.example\r\nTo: user@example.test\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;'
            b' boundary="sig"\r\n\r\n--sig\r\nContent-Type: text/html; charset=utf-8\r\n\r\n'
            b'<a href="https://shop.example/x">x</a>\r\n--sig\r\nContent-Type: application/pkcs7-signature;'
            b' name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n'
            b"--sig--\r\n")


def unknown_charset() -> bytes:
    return (b"From: news@acme.example\r\nTo: user@example.test\r\nSubject: charset\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=x-martian\r\n\r\n<a href=\"https://shop.example/x\">x</a>\r\n")


def broken_mime() -> bytes:
    return (b"From: news@acme.example\r\nTo: user@example.test\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n--b1\r\n'
            b"Content-Type: text/html; charset=utf-8\r\n\r\n<a href=\"https://shop.example/x\">x</a>\r\n")


def pgp_inline() -> bytes:
    return (b"From: news@acme.example\r\nTo: user@example.test\r\nSubject: pgp\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n"
            b"<a href=\"https://shop.example/x\">x</a>\r\n")


@pytest.mark.parametrize("make", [signed_mail, unknown_charset, broken_mime, pgp_inline])
async def test_unmodifiable_mail_is_delivered_byte_for_byte(
        relay: RelayUnderTest, mx: ScriptedMx, make: Any, caplog: pytest.LogCaptureFixture) -> None:
    raw = make()
    await send(relay, "user@example.test", raw)
    content = await delivered(mx, 1)
    assert _body(content) == _body(raw) and b"/c/" not in content and b"/o/" not in content
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        assert line + b"\r\n" in content
    assert any(getattr(r, "event", None) == "tracking_skipped" for r in caplog.records)


async def test_per_message_opt_out_and_account_default(relay: RelayUnderTest, mx: ScriptedMx,
                                                       relay_factory: RelayFactory, tmp_path: Path) -> None:
    await send(relay, "user@example.test", newsletter("X-Mailrelay-Track: off"))
    content = await delivered(mx, 1)
    assert b"X-Mailrelay-Track" not in content
    text, _ = html_part(content)
    assert "/c/" not in text and "/o/" not in text and "https://shop.example/p/1?a=1&amp;b=2" in text
    assert b"List-Unsubscribe:" in content  # only tracking was turned off
    # another account, never changed: tracking is off by default
    await relay.add_user("b1", "beta-key-0123456789", account="beta")
    c = await relay.client(user="b1", key="beta-key-0123456789")
    try:
        await c.sendmail("app@acme.example", ["user@example.test"], newsletter())
    finally:
        await c.quit()
    text, _ = html_part(await delivered(mx, 2))
    assert "/c/" not in text and "/o/" not in text
