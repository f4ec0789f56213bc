"""List-Unsubscribe end to end, on both backends: a real relay (SMTP intake, delivery through the
loopback DNS to a scripted MX, the recipient-facing web listener, the feedback listener, the HTTP
API); dkimpy verifies the delivered message with its List-Unsubscribe fields; one-click POST, the
landing page and the mailto address put the recipient on the unsubscribe list, and the next RCPT
is refused."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import aiohttp
import aiosmtplib
import pytest

from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.delivery_harness import free_port
from tests.integration.relay_fixture import RelayUnderTest, wait_until
from tests.integration.test_dkim_delivery import message, publish, signature_tags, verify
from tests.integration.test_http_api import basic

ADMIN = "admin-token-recipient-0123"


def recipient_overrides(dns: LoopbackDns, mx_port: int) -> dict[str, Any]:
    web_port = free_port("127.0.0.1")
    return {
        "delivery.enabled": True, "delivery.dns": [f"{dns.host}:{dns.port}"], "delivery.mx_port": mx_port,
        "delivery.dns_timeout": "1s", "delivery.dkim_processes": 0, "delivery.ehlo_name": "relay.test",
        "web.listen": f"127.0.0.1:{web_port}", "web.public_url": f"http://127.0.0.1:{web_port}",
        "feedback.listen": "127.0.0.1:0", "feedback.domains": ["fb.example"],
        "http.listen": "127.0.0.1:0", "http.admin_token": ADMIN,
        "webhooks.allow_private_addresses": True,  # the tests' webhook receivers are on 127.0.0.1
    }


@pytest.fixture(params=["sqlite", "postgres"])
async def relay(request: pytest.FixtureRequest, relay_factory: RelayFactory, dns: LoopbackDns,
                mx_port: int) -> RelayUnderTest:
    return await relay_factory(recipient_overrides(dns, mx_port), backend=request.param)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def send(relay: RelayUnderTest, rcpt: str, body: bytes) -> str:
    c = await relay.client()
    try:
        _, reply = await c.sendmail("app@acme.example", [rcpt], body)
    finally:
        await c.quit()
    m = re.search(r"queued as (\S+)", reply)
    assert m is not None, reply
    return m.group(1)


async def delivered(mx: ScriptedMx, n: int) -> bytes:
    await wait_until(lambda: len(mx.messages) >= n, timeout=20)
    return mx.messages[n - 1].content


def list_unsubscribe(content: bytes) -> tuple[str, str]:
    head = content.split(b"\r\n\r\n", 1)[0].decode()
    m = re.search(r"^List-Unsubscribe: <(http://[^>]+)>, <mailto:([^>]+)>\r$", head, re.M)
    assert m is not None, head
    assert "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head + "\r\n"
    return m.group(1), m.group(2)


def api_url(relay: RelayUnderTest, path: str) -> str:
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    return f"http://{host}:{port}{path}"


async def api_get(http: aiohttp.ClientSession, relay: RelayUnderTest, path: str) -> Any:
    async with http.get(api_url(relay, path), headers=basic(relay.api_user, relay.key)) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def unsubscribes(http: aiohttp.ClientSession, relay: RelayUnderTest) -> dict[str, int]:
    body = await api_get(http, relay, "/v1/unsubscribes?limit=100")
    return {e["email"]: e["type"] for e in body["result"]}


async def events(http: aiohttp.ClientSession, relay: RelayUnderTest, email_id: str) -> list[dict[str, Any]]:
    body = await api_get(http, relay, f"/v1/messages/{email_id}")
    return [e for r in body["result"] for e in r["events"]]


async def test_one_click_unsubscribe_signed_headers_and_next_rcpt_refused(
        relay: RelayUnderTest, mx: ScriptedMx, dns: LoopbackDns, http: aiohttp.ClientSession) -> None:
    await publish(relay.storage, dns, "acme.example")
    email_id = await send(relay, "user@example.test", message("multipart/alternative"))
    content = await delivered(mx, 1)
    url, mailto = list_unsubscribe(content)
    assert mailto.endswith("@fb.example") and mailto.startswith("unsub-")
    signed = signature_tags(content)["h"].split(":")
    assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
    assert await verify(dns, content)  # the fields were added before the signature, which covers them
    token = url.rpartition("/")[2]
    assert len(token) < 1000 and email_id.lower() not in url.lower()  # nothing readable at a glance

    # tampered, truncated, foreign kind or unknown path: 404, nothing recorded
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    base = url.rpartition("/u/")[0]
    for bad in (f"{base}/u/{flipped}", f"{base}/u/{token[:-2]}", f"{base}/c/{token}", f"{base}/o/{token}",
                f"{base}/u/{'A' * 5000}.{'B' * 22}", f"{base}/u/'%20OR%201=1--", f"{base}/x/{token}"):
        async with http.post(bad, data={"List-Unsubscribe": "One-Click"}, allow_redirects=False) as r:
            assert r.status in (404, 405), bad
        async with http.get(bad, allow_redirects=False) as r:
            assert r.status == 404, bad
    assert await unsubscribes(http, relay) == {}

    # RFC 8058 one-click: 200, no redirect, idempotent
    for _ in range(2):
        async with http.post(url, data={"List-Unsubscribe": "One-Click"}, allow_redirects=False) as r:
            assert r.status == 200 and "Location" not in r.headers
    assert await unsubscribes(http, relay) == {"user@example.test": 0}
    c = await relay.client()
    try:
        await c.mail("app@acme.example")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await c.rcpt("user@example.test")
        assert refused.value.code == 550 and "5.7.1" in refused.value.message
        assert "unsubscribe" in refused.value.message
    finally:
        await c.quit()

    async def recorded() -> bool:
        return any(e["type"] == "unsubscribe" for e in await events(http, relay, email_id))

    await wait_until(recorded, timeout=10)
    ev = next(e for e in await events(http, relay, email_id) if e["type"] == "unsubscribe")
    assert ev["ip"] == "127.0.0.1" and ev["reason_type"] == 0 and ev["user_agent"].startswith("Python")
    assert ev["kind"] == "feedback" and ev["time"]


async def test_landing_page_escapes_and_records_the_reason(
        relay: RelayUnderTest, mx: ScriptedMx, http: aiohttp.ClientSession) -> None:
    evil = '"<script>alert(1)</script>"@example.test'
    await send(relay, evil, message("7bit"))
    url, _ = list_unsubscribe(await delivered(mx, 1))
    async with http.get(url) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
        page = await r.text()
    assert "<script>" not in page and html.escape(evil) in page
    for text in ("I don&#x27;t want to receive such mail anymore", "This is not my subscription", "This is spam",
                 "This is a fraudulent email"):
        assert text in page
    m = re.search(r'name="nonce" value="([0-9a-f]+)"', page)
    assert m is not None
    for form in ({"reason": "2"}, {"reason": "2", "nonce": "0" * 32}, {"reason": "7", "nonce": m.group(1)}):
        async with http.post(url, data=form) as r:  # no or a forged nonce (CSRF), or a bad reason
            assert r.status == 400
    assert await unsubscribes(http, relay) == {}
    async with http.post(url, data={"reason": "2", "nonce": m.group(1)}, allow_redirects=False) as r:
        assert r.status == 200 and "<script>" not in await r.text()
    assert await unsubscribes(http, relay) == {evil.lower(): 2}


async def test_mail_to_the_mailto_address_unsubscribes(
        relay: RelayUnderTest, mx: ScriptedMx, http: aiohttp.ClientSession) -> None:
    await send(relay, "reader@example.test", message("7bit"))
    _, mailto = list_unsubscribe(await delivered(mx, 1))
    msg = EmailMessage()
    msg["From"] = "reader@example.test"
    msg["To"] = mailto
    msg["Subject"] = "unsubscribe"
    msg.set_content("unsubscribe\n")
    assert relay.feedback_port is not None
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.feedback_port, start_tls=False, timeout=10)
    await c.connect()
    try:
        forged = mailto[:-27] + "aaaaaaaaaaaaaaaa@fb.example"  # a wrong MAC: unsubscribes nobody
        try:
            await c.sendmail("reader@example.test", [forged], msg.as_bytes(policy=SMTP))
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPRecipientsRefused) as refused:
            assert "5.1.1" in str(refused)  # the feedback listener accepts only mailboxes we issued
        await wait_until(lambda: not relay.app.feedback or not relay.app.feedback.tasks, timeout=10)
        assert await unsubscribes(http, relay) == {}
        await c.sendmail("reader@example.test", [mailto], msg.as_bytes(policy=SMTP))
    finally:
        await c.quit()

    async def listed() -> bool:
        return await unsubscribes(http, relay) == {"reader@example.test": 0}

    await wait_until(listed, timeout=10)
    await wait_until(lambda: not relay.app.feedback or not relay.app.feedback.tasks, timeout=10)
    quarantine = relay.home / "feedback" / "quarantine"
    kept = sorted(p.name for p in quarantine.iterdir()) if quarantine.exists() else []
    assert len([n for n in kept if n.endswith(".eml")]) <= 1, kept  # the forged one (if taken); not the real one


async def test_turned_off_per_message_and_per_account(
        relay: RelayUnderTest, mx: ScriptedMx, http: aiohttp.ClientSession) -> None:
    body = message("7bit").replace(b"Subject:", b"X-Mailrelay-Unsubscribe: off\r\nSubject:")
    await send(relay, "a@example.test", body)
    content = await delivered(mx, 1)
    assert b"List-Unsubscribe" not in content and b"X-Mailrelay" not in content  # stripped at intake
    # the customer's own List-Unsubscribe is kept, never doubled
    own = message("7bit").replace(b"Subject:", b"List-Unsubscribe: <mailto:leave@acme.example>\r\nSubject:")
    await send(relay, "b@example.test", own)
    content = await delivered(mx, 2)
    assert content.count(b"List-Unsubscribe:") == 1 and b"<mailto:leave@acme.example>" in content

    beta = await relay.add_user("b1", "beta-key-0123456789", account="beta")
    async with http.put(api_url(relay, "/v1/account/settings"), json={"list_unsubscribe": False},
                        headers=basic("b1", "beta-key-0123456789")) as r:
        assert r.status == 200
        assert await r.json() == {"account": "beta", "list_unsubscribe": False, "track_opens": False,
                                  "track_clicks": False}
    assert (await relay.storage.accounts.get_settings(beta)).list_unsubscribe is False
    c = await relay.client(user="b1", key="beta-key-0123456789")
    try:
        await c.sendmail("app@acme.example", ["c@example.test"], message("7bit"))
    finally:
        await c.quit()
    assert b"List-Unsubscribe" not in await delivered(mx, 3)
