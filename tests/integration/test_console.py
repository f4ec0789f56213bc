"""The web console in a real headless Chromium (Debian's, through chromedriver), against a real
relay: SMTP in, scripted MX out, the console on the HTTP listener. Every test saves screenshots
under its tmp_path (``screens/``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.records import Status
from tests.helpers.browser import Browser, available
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until

ADMIN = "console-admin-token-0123456789"
NO_BROWSER = available()
pytestmark = pytest.mark.skipif(NO_BROWSER is not None, reason=NO_BROWSER or "")


async def _relay(factory: RelayFactory, sink: ScriptedMx) -> RelayUnderTest:
    return await factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                          "delivery.ehlo_name": "relay.test", "http.listen": "127.0.0.1:0",
                          "http.admin_token": ADMIN})


def _base(relay: RelayUnderTest) -> str:
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    return f"http://{host}:{port}"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    b: Browser | None = None

    def make(base: str) -> Browser:
        nonlocal b
        b = Browser(base, tmp_path / "screens")
        return b

    holder = _Holder(make)
    yield holder  # type: ignore[misc]
    if b is not None:
        await asyncio.to_thread(b.close)


class _Holder:
    """Starts the browser once the relay's address is known."""

    def __init__(self, make):  # type: ignore[no-untyped-def]
        self._make = make

    async def start(self, base: str) -> Browser:
        return await asyncio.to_thread(self._make, base)


async def _send(relay: RelayUnderTest, rcpts: list[str], subject: str = "hello",
                user: str | None = None, key: str | None = None) -> str:
    c = await relay.client(user=user, key=key)
    _, msg = await c.sendmail("app@acme.example", rcpts, f"Subject: {subject}\r\n\r\nbody\r\n")
    await c.quit()
    return msg.rsplit(" ", 1)[1]


async def test_customer_finds_a_message_just_sent_and_opens_its_send_log(
        relay_factory: RelayFactory, sink: ScriptedMx, browser: _Holder) -> None:
    relay = await _relay(relay_factory, sink)
    email_id = await _send(relay, ["alice@example.com"], "console status test")

    async def delivered() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return bool(rows) and rows[0].status is Status.DELIVERED

    await wait_until(delivered)
    b = await browser.start(_base(relay))
    await b.run(b.sign_in, relay.api_user, relay.key)

    def search() -> None:
        b.fill("#f-email", "alice@example.com")
        b.find("#f-email").submit()
        b.wait(lambda: "alice@example.com" in b.find("table").text)
        row = b.find("tbody tr")
        assert "delivered" in row.text and relay.api_user in row.text and "127.0.0.1" in row.text
        b.shot("status")
        row.find_element("css selector", "a").click()
        b.wait(lambda: "Send log" in b.text())
        body = b.text()
        assert email_id in body and "console status test" in body
        assert "attempt" in body and "250" in body  # the MX's reply in the send log
        assert "No opens, clicks, unsubscribes or feedback" in body
        b.shot("message")

    await b.run(search)
