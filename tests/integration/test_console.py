"""The web console in a real headless Chromium (Debian's, through chromedriver), against a real
relay: SMTP in, scripted MX out, the console on the HTTP listener. Every test saves screenshots
under its tmp_path (``screens/``)."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from relay.delivery.admin import QueueAdmin
from storage.records import AccountSettings, ListKind, LogKind, Status, SuppressionEntry, utcnow
from tests.helpers.browser import Browser, available
from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until
from tests.integration.test_tracking import LINK, html_part, newsletter
from tests.integration.test_unsubscribe import delivered, recipient_overrides, send

ADMIN = "console-admin-token-0123456789"


async def _relay(factory: RelayFactory, sink: ScriptedMx) -> RelayUnderTest:
    return await factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                          "delivery.ehlo_name": "relay.test", "http.listen": "127.0.0.1:0",
                          "http.admin_token": ADMIN})


def _base(relay: RelayUnderTest) -> str:
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    return f"http://{host}:{port}"


BrowserFactory = Callable[..., Awaitable[Browser]]


@pytest.fixture(scope="module")
def chromium() -> Iterator[dict[int, Browser]]:
    """One Chromium per window width for the whole module (starting one takes a second or more);
    each test gets it reset (:meth:`Browser.reuse`, :meth:`Browser.reset`)."""
    pool: dict[int, Browser] = {}
    yield pool
    for b in pool.values():
        b.close()


@pytest.fixture
async def browser(tmp_path: Path, chromium: dict[int, Browser]) -> AsyncIterator[BrowserFactory]:
    """``await browser(base_url)`` hands out the browser once the relay's address is known."""
    missing = available()
    if missing is not None:  # make test installs it (scripts/system-deps.sh): never skip silently
        pytest.fail(missing)
    used: list[Browser] = []

    async def start(base: str, width: int = 1280) -> Browser:
        b = chromium.get(width)
        if b is None:
            b = chromium[width] = await asyncio.to_thread(Browser, base, tmp_path / "screens", width)
        else:
            await asyncio.to_thread(b.reuse, base, tmp_path / "screens")
        used.append(b)
        return b

    yield start
    for b in used:
        try:
            await asyncio.to_thread(b.reset)
        except Exception:  # a browser that cannot be reset is not handed to the next test
            chromium.pop(b.width, None)
            await asyncio.to_thread(b.close)
            raise


async def _send(relay: RelayUnderTest, rcpts: list[str], subject: str = "hello",
                user: str | None = None, key: str | None = None) -> str:
    c = await relay.client(user=user, key=key)
    _, msg = await c.sendmail("app@acme.example", rcpts, f"Subject: {subject}\r\n\r\nbody\r\n")
    await c.quit()
    return msg.rsplit(" ", 1)[1]


async def test_customer_finds_a_message_just_sent_and_opens_its_send_log(
        relay_factory: RelayFactory, sink: ScriptedMx, browser: BrowserFactory) -> None:
    relay = await _relay(relay_factory, sink)
    email_id = await _send(relay, ["alice@example.com"], "console status test")

    async def delivered() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return bool(rows) and rows[0].status is Status.DELIVERED

    await wait_until(delivered)
    b = await browser(_base(relay))
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


TSS04 = ("421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user "
         "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes")


async def test_paused_queue_recover_drains_it_and_the_chart_refreshes(
        relay_factory: RelayFactory, sink: ScriptedMx, browser: BrowserFactory) -> None:
    relay = await _relay(relay_factory, sink)
    sink.set(rcpt=TSS04)  # a reputation block: the site pauses
    email_id = await _send(relay, ["p1@example.com", "p2@example.com"], "paused")
    assert relay.app.scheduler is not None
    sched = relay.app.scheduler

    def paused() -> bool:
        views = QueueAdmin(sched).list("app1")
        return bool(views) and views[0].status == "paused" and views[0].pending == 2

    await wait_until(paused)
    sink.set(rcpt=None)  # the MX takes mail again: nothing moves before the pause ends ... or Recover
    b = await browser(_base(relay))
    await b.run(b.sign_in, relay.api_user, relay.key)

    def see_paused() -> tuple[str, str]:
        b.open("/console/queues")
        row = b.find("tr[data-queue='app1/example.com']")
        assert "paused" in row.text and "TSS04" in row.text and "Next send" in row.text
        assert row.find_element("css selector", "[data-field=pending]").text == "2"
        chart = b.find("#chart")
        b.wait(lambda: chart.get_attribute("data-points") not in (None, "", "0"))
        first = chart.get_attribute("data-last") or ""
        b.wait(lambda: (chart.get_attribute("data-last") or "") != first, timeout=40)  # no reload in between
        b.shot("queue-paused")
        return first, chart.get_attribute("data-last") or ""

    first, second = await b.run(see_paused)
    assert first != second and float(second.split(",")[0]) > float(first.split(",")[0])  # a later 5 s point

    def recover() -> None:
        b.find("tr[data-queue='app1/example.com'] button[title^='Send everything']").click()
        b.wait(lambda: "Recovered app1/example.com: 2 waiting recipients" in b.text(), timeout=30)
        b.wait(lambda: b.find("tr.chosen [data-field=pending]").text == "0", timeout=40)  # drained, live
        b.shot("queue-recovered")

    await b.run(recover)

    async def delivered() -> bool:
        return all(r.status is Status.DELIVERED for r in await relay.storage.statuses.get_message(email_id))

    await wait_until(delivered)
    assert sorted(m.rcpt for m in sink.messages) == ["p1@example.com", "p2@example.com"]


async def test_block_added_in_the_console_refuses_the_next_rcpt_and_upload_lists_bad_lines(
        relay_factory: RelayFactory, sink: ScriptedMx, browser: BrowserFactory, tmp_path: Path) -> None:
    relay = await _relay(relay_factory, sink)
    b = await browser(_base(relay))
    await b.run(b.sign_in, relay.api_user, relay.key)

    def add_block() -> None:
        b.open("/console/lists/blocks")
        assert "This list is empty." in b.text()
        b.fill("#a-values", "Blocked@Example.com")
        b.find("#a-values").find_element("xpath", "./ancestor::form").submit()
        b.wait(lambda: "Added 1 new entries" in b.text())
        assert "blocked@example.com" in b.find("table").text

    await b.run(add_block)
    c = await relay.client()
    await c.mail("app@acme.example")
    code, text = await c.execute_command(b"RCPT TO:<blocked@example.com>")
    await c.quit()
    assert code == 550 and "Block" in text

    upload = tmp_path / "blocks.csv"
    upload.write_text("first@example.com\nnot an address@@\nexample.org\n")

    def upload_file() -> None:
        b.find("#u-file").send_keys(str(upload))
        b.find("#upload button[type=submit]").click()
        b.wait(lambda: "Imported 2 entries" in b.find("#u-result").text)
        bad = b.find("#u-result .bad-lines").text
        assert bad.startswith("line 2: ")
        assert float(b.find("#u-progress").get_attribute("value") or 0) == 100
        b.shot("blocks-upload")
        b.open("/console/lists/blocks")
        table = b.find("table").text
        assert "first@example.com" in table and "example.org" in table

    await b.run(upload_file)


async def test_delete_a_complaint_after_the_advice(
        relay_factory: RelayFactory, sink: ScriptedMx, browser: BrowserFactory) -> None:
    relay = await _relay(relay_factory, sink)
    now = utcnow()
    await relay.storage.suppressions.add([
        SuppressionEntry(account_id=relay.account_id, kind=ListKind.COMPLAINT, value=v, created_at=now,
                         expires_at=now + timedelta(days=180), reason="abuse")
        for v in ("angry@example.com", "keep@example.com")])
    b = await browser(_base(relay))
    await b.run(b.sign_in, relay.api_user, relay.key)

    def delete() -> str:
        b.open("/console/lists/complaints")
        assert "We advise against deleting spam reports" in b.text()
        b.find("input[aria-label='Select angry@example.com']").click()
        b.shot("complaints")
        b.find("#delete-form button.danger").click()
        alert = b.wait(lambda: b.driver.switch_to.alert)
        text = str(alert.text)
        alert.accept()
        b.wait(lambda: "Deleted 1 entries." in b.text())
        assert "the next mail to these addresses will be sent" in b.text()
        table = b.find("table").text
        assert "angry@example.com" not in table and "keep@example.com" in table
        return text

    confirm = await b.run(delete)
    assert "We advise against deleting spam reports" in confirm and "next mail" in confirm
    hits = await relay.storage.suppressions.hits(relay.account_id, "app1", "angry@example.com", "example.com", utcnow())
    assert not hits.complaint


async def test_export_these_results_then_download_the_file(
        relay_factory: RelayFactory, sink: ScriptedMx, browser: BrowserFactory) -> None:
    relay = await _relay(relay_factory, sink)
    await _send(relay, ["exported@example.com"], "for the export")
    b = await browser(_base(relay))
    await b.run(b.sign_in, relay.api_user, relay.key)

    def export() -> Path:
        b.open("/console/status?email=exported%40example.com")
        b.wait(lambda: "exported@example.com" in b.find("table").text)
        b.find(".bar button[type=submit]").click()
        b.wait(lambda: "was created" in b.text())

        def ready() -> bool:
            b.open("/console/exports")
            return bool(b.finds("a[download]"))

        b.wait(ready, timeout=30)
        assert "succeeded" in b.find("tbody").text and "100.0%" in b.find("tbody").text
        b.shot("exports")
        b.find("a[download]").click()
        files = b.wait(lambda: [p for p in b.downloads.glob("*.csv.gz")], timeout=20)
        return Path(files[0])

    path = await b.run(export)
    text = gzip.decompress(path.read_bytes()).decode()
    assert "exported@example.com" in text


async def test_a_second_account_sees_nothing_of_the_first(
        relay_factory: RelayFactory, sink: ScriptedMx, browser: BrowserFactory) -> None:
    relay = await _relay(relay_factory, sink)
    sink.set(rcpt=TSS04)
    email_id = await _send(relay, ["secret@example.com"], "first account only")
    now = utcnow()
    await relay.storage.suppressions.add([SuppressionEntry(
        account_id=relay.account_id, kind=kind, value="secret@example.com", created_at=now,
        expires_at=now + timedelta(days=30) if kind is not ListKind.BLOCK else None)
        for kind in (ListKind.COMPLAINT, ListKind.BLOCK, ListKind.BOUNCE)])
    assert relay.app.scheduler is not None
    sched = relay.app.scheduler
    await wait_until(lambda: sched.find_queue("app1", "example.com") is not None)
    await relay.add_user("other1", "other-key-0123456789", account="other")
    b = await browser(_base(relay))
    await b.run(b.sign_in, "other1", "other-key-0123456789")

    def look() -> None:
        b.open("/console/status")
        assert "No mail matches these filters" in b.text()
        b.open(f"/console/status/{email_id}")
        assert "There is no message" in b.text() and "first account only" not in b.text()
        b.open("/console/queues")
        assert "No queues right now" in b.text()
        b.open("/console/queues/app1/example.com/series.json")
        assert "404" in b.text() and "secret" not in b.text()
        for slug in ("complaints", "blocks", "bounces"):
            b.open(f"/console/lists/{slug}")
            assert "This list is empty." in b.text() and "secret@example.com" not in b.text()
        b.open("/console/status?account=acme")
        assert "you can only act on your own account" in b.text()
        b.open("/console/exports")
        assert "No exports yet." in b.text()
        b.open("/console/tracking")
        assert "No opens or clicks: no mail matches these filters" in b.text() and "secret" not in b.text()
        b.open("/console/status")
        b.shot("other-account")

    await b.run(look)


# the elements (outside a scrolling table box) that stick out of a 390 px viewport, for the message
WIDER_THAN_390 = ("return [...document.querySelectorAll('body *')]"
                  ".filter(e => e.getBoundingClientRect().right > 392 && !e.closest('.scroll'))"
                  ".map(e => `${e.tagName}.${e.className}#${e.id}`).slice(0, 10)")


async def test_usable_at_390_px_and_by_keyboard(
        relay_factory: RelayFactory, sink: ScriptedMx, browser: BrowserFactory) -> None:
    relay = await _relay(relay_factory, sink)
    await _send(relay, ["phone@example.com"], "small screen")
    now = utcnow()
    await relay.storage.suppressions.add([
        SuppressionEntry(account_id=relay.account_id, kind=ListKind.UNSUBSCRIBE, value="gone@example.com",
                         created_at=now, reason_code=2),
        SuppressionEntry(account_id=relay.account_id, kind=ListKind.BOUNCE, value="nobody@example.com",
                         created_at=now, expires_at=now + timedelta(days=60), hit_count=2,
                         reason="550 5.1.1 no such user")])
    b = await browser(_base(relay), 390)

    def by_keyboard() -> None:
        b.open("/console/")
        b.find("body").send_keys(Keys.TAB)  # the skip link, then the form's fields in order
        active = b.driver.switch_to.active_element
        for _ in range(5):
            if active.get_attribute("id") == "api_user":
                break
            active.send_keys(Keys.TAB)
            active = b.driver.switch_to.active_element
        assert active.get_attribute("id") == "api_user"
        active.send_keys(relay.api_user, Keys.TAB)
        b.driver.switch_to.active_element.send_keys(relay.key, Keys.ENTER)
        b.wait(lambda: "/console/status" in b.driver.current_url)
        for path, expect in (("/console/status", "phone@example.com"),
                             ("/console/lists/unsubscribes", "2 — This is spam"),
                             ("/console/lists/bounces", "No-interception list"),
                             ("/console/queues", "Queue"),
                             ("/console/tracking", "Opens and clicks")):
            b.open(path)
            assert expect in b.text()
            width = b.driver.execute_script("return document.documentElement.scrollWidth")
            wide = b.driver.execute_script(WIDER_THAN_390)
            assert width <= 390, f"{path} is {width} px wide at 390 px: {wide}"  # tables scroll inside their box
        b.open("/console/lists/bounces")
        assert "nobody@example.com" in b.text() and "550 5.1.1 no such user" in b.text()
        b.shot("bounces-390px")
        b.open("/console/status")
        b.shot("status-390px")

    await b.run(by_keyboard)


async def test_tracking_shows_real_opens_and_clicks_per_email(
        relay_factory: RelayFactory, dns: LoopbackDns, mx_port: int, mx: ScriptedMx,
        browser: BrowserFactory) -> None:
    """A newsletter with tracking on, through SMTP to a scripted MX; its open pixel and link are
    fetched on the [web] listener like a mail client would; the console shows the events."""
    relay = await relay_factory(recipient_overrides(dns, mx_port))
    await relay.storage.accounts.set_settings(relay.account_id, AccountSettings(True, True, True))
    email_id = await send(relay, "user@example.test", newsletter())
    text, _ = html_part(await delivered(mx, 1))
    base = relay.cfg.web.public_url
    click = re.findall(rf'href="({re.escape(base)}/c/[^"]+)"', text)[0]
    pixel = re.findall(rf'<img src="({re.escape(base)}/o/[^"]+)"', text)[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(pixel, headers={"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"}) as r:
            assert r.status == 200  # a privacy proxy's fetch: a machine open
        async with http.get(pixel, headers={"User-Agent": "Thunderbird/115.0"}) as r:
            assert r.status == 200
        async with http.get(click, allow_redirects=False, headers={"User-Agent": "Reader/1.0"}) as r:
            assert r.status == 302 and r.headers["Location"] == LINK

    async def recorded() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return sum(e.kind is LogKind.FEEDBACK for r in rows for e in r.log) >= 3

    await wait_until(recorded, timeout=15)
    b = await browser(_base(relay))
    await b.run(b.sign_in, relay.api_user, relay.key)

    def tracking() -> None:
        b.open("/console/tracking")
        rows = b.finds("table.tracking tbody tr")
        assert len(rows) == 3, b.text()
        table = b.find("table.tracking").text
        assert "user@example.test" in table and "Grüße: this week" in table
        click_row = next(r for r in rows if "click" in r.text)
        assert LINK in click_row.text and "127.0.0.1" in click_row.text and "Reader/1.0" in click_row.text
        machine = [r for r in rows if "machine open" in r.text]
        assert len(machine) == 1 and "GoogleImageProxy" in machine[0].text
        assert any("Thunderbird/115.0" in r.text and "machine open" not in r.text for r in rows)
        b.shot("tracking")
        Select(b.find("#f-event")).select_by_value("click")  # a filter: clicks only
        b.find("#f-event").submit()
        b.wait(lambda: "event=click" in b.driver.current_url)
        rows = b.finds("table.tracking tbody tr")
        assert len(rows) == 1 and "click" in rows[0].text
        b.open("/console/tracking?machine=hide")
        assert len(b.finds("table.tracking tbody tr")) == 2 and "machine open" not in b.find("table.tracking").text
        b.find("table.tracking a").click()  # the recipient: the record's page lists the same events
        b.wait(lambda: "Send log" in b.text())
        events = b.find("table.events").text
        assert LINK in events and "Reader/1.0" in events and "machine open" in events and "Thunderbird" in events
        b.shot("message-events")

    await b.run(tracking)
