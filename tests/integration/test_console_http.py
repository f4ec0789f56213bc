"""The console's session and form protection over plain HTTP (no browser needed to see them):
CSRF tokens, the cookie's flags and expiry, a revoked key ending the session, the sign-in
throttle shared with SMTP AUTH, the operator's account choice, static files and the redirect."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest

from relay.console import pages
from relay.console import session as sess
from relay.delivery.admin import QueueView
from relay.engagement import Engagement
from relay.keys import hash_key
from relay.service.access import SERVICES_KEY
from storage.records import (
    EventType,
    ExportStatus,
    ListKind,
    LogEntry,
    LogKind,
    RecipientEvent,
    StatusFilter,
    SuppressionEntry,
    utcnow,
)
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until

ADMIN = "console-admin-token-0123456789"
HTTP = {"http.listen": "127.0.0.1:0", "http.admin_token": ADMIN}


def _base(relay: RelayUnderTest) -> str:
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    return f"http://{host}:{port}"


Web = tuple[RelayUnderTest, aiohttp.ClientSession]


@pytest.fixture
async def web(relay_factory: RelayFactory) -> AsyncIterator[Web]:
    relay = await relay_factory({**HTTP, "limits.auth_failures_per_ip": 5})
    async with aiohttp.ClientSession(_base(relay), cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield relay, http


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


async def _sign_in(http: aiohttp.ClientSession, **fields: str) -> aiohttp.ClientResponse:
    async with http.get("/console/signin") as r:
        token = _csrf(await r.text())
    async with http.post("/console/signin", data={"csrf": token, **fields}, allow_redirects=False) as r:
        await r.read()
        return r


async def test_sign_in_sets_a_strict_httponly_expiring_cookie_and_root_redirects(web: Web) -> None:
    relay, http = web
    async with http.get("/", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/console/"
    async with http.get("/console/status", allow_redirects=False) as r:  # signed out: to the sign-in page
        assert r.status == 303 and r.headers["Location"].startswith("/console/signin?next=%2Fconsole%2Fstatus")
    r = await _sign_in(http, api_user="app1", api_key=relay.key)
    assert r.status == 303 and r.headers["Location"] == "/console/status"
    cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith(sess.COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
    assert f"Max-Age={8 * 3600}" in cookie
    async with http.get("/console/status") as r:
        assert r.status == 200 and "app1" in await r.text()
    async with http.get("/console/static/vendor/uplot/uPlot.iife.min.js") as r:
        assert r.status == 200 and "max-age=" in r.headers["Cache-Control"]
    async with http.get("/console/static/vendor/uplot/LICENSE") as r:
        assert r.status == 200 and "MIT" in await r.text()


async def test_post_without_the_csrf_token_is_refused(web: Web) -> None:
    relay, http = web
    async with http.post("/console/signin", data={"api_user": "app1", "api_key": relay.key},
                         allow_redirects=False) as r:  # the sign-in form has a token too
        assert r.status == 403 and "CSRF" in await r.text()
    await _sign_in(http, api_user="app1", api_key=relay.key)
    async with http.get("/console/lists/blocks") as r:
        token = _csrf(await r.text())
    for data, headers in (({"values": "x@example.com"}, {}),
                          ({"values": "x@example.com", "csrf": "forged"}, {}),
                          ({"values": "x@example.com"}, {"X-CSRF-Token": "forged"})):
        async with http.post("/console/lists/blocks/add", data=data, headers=headers, allow_redirects=False) as r:
            assert r.status == 403 and "reload the page" in await r.text()
    async with http.post("/console/lists/blocks/upload.json", data=b"y@example.com\n",
                         headers={"Content-Type": "text/csv"}) as r:
        assert r.status == 403 and "CSRF" in (await r.json())["message"]
    async with http.post("/console/queues/app1/example.com", data={"do": "recover"}, allow_redirects=False) as r:
        assert r.status == 403
    assert (await relay.storage.suppressions.list(relay.account_id, ListKind.BLOCK)).total == 0
    async with http.post("/console/lists/blocks/add", data={"values": "x@example.com", "csrf": token},
                         allow_redirects=False) as r:
        assert r.status == 303
    assert (await relay.storage.suppressions.list(relay.account_id, ListKind.BLOCK)).total == 1


async def test_a_revoked_key_ends_the_session_at_the_next_request(web: Web) -> None:
    relay, http = web
    await _sign_in(http, api_user="app1", api_key=relay.key)
    async with http.get("/console/status") as r:
        assert r.status == 200
    assert await relay.storage.accounts.revoke_api_user("app1", utcnow())
    async with http.get("/console/status", allow_redirects=False) as r:
        assert r.status == 303 and "signin" in r.headers["Location"]
    async with http.get("/console/signin", allow_redirects=False) as r:
        assert "Your session has ended" not in await r.text()


async def test_a_new_key_ends_the_sessions_of_the_old_one(web: Web) -> None:
    relay, http = web
    await _sign_in(http, api_user="app1", api_key=relay.key)
    async with http.get("/console/status", allow_redirects=False) as r:
        assert r.status == 200
    assert await relay.storage.accounts.replace_api_user_key("app1", hash_key("new-key-0123456789", n=2**10))
    async with http.get("/console/status") as r:  # followed to the sign-in page, which says why
        assert r.url.path == "/console/signin" and "Your session has ended" in await r.text()


async def test_a_tampered_or_expired_cookie_is_no_session() -> None:
    key = b"k" * 32
    s = sess.new_session("app1", 60, time.time())
    signed = sess.sign(key, s)
    assert sess.verify(key, signed, time.time()) == s
    assert sess.verify(key, signed, time.time() + 61) is None  # expired
    assert sess.verify(b"x" * 32, signed, time.time()) is None  # another key
    mac = signed.partition(".")[2]
    forged = sess.sign(b"x" * 32, sess.Session(None, s.expires, s.csrf)).partition(".")[0]
    assert sess.verify(key, f"{forged}.{mac}", time.time()) is None  # operator claim with app1's MAC
    assert sess.verify(key, "garbage", time.time()) is None and sess.verify(key, None, time.time()) is None


async def test_failed_sign_ins_are_throttled_like_smtp_auth(web: Web) -> None:
    relay, http = web
    for _ in range(5):
        r = await _sign_in(http, api_user="app1", api_key="wrong")
        assert r.status == 401
    r = await _sign_in(http, api_user="app1", api_key=relay.key)  # even the right key, from this address
    assert r.status == 429
    async with http.get("/console/signin") as page:
        assert sess.COOKIE not in page.cookies


async def test_operator_sees_every_account_and_picks_one(web: Web) -> None:
    _, http = web
    r = await _sign_in(http, admin_token="not-the-token")
    assert r.status == 401
    r = await _sign_in(http, admin_token=ADMIN)
    assert r.status == 303
    async with http.get("/console/lists/blocks") as r:  # lists belong to one account: the API says so
        assert r.status == 400 and "account: required for operators" in await r.text()
    async with http.get("/console/lists/blocks?account=acme") as r:
        html = await r.text()
        assert r.status == 200 and "This list is empty." in html
        assert 'href="/console/status?account=acme"' in html  # links keep the choice
    async with http.get("/console/status?account=nobody") as r:
        assert r.status == 400 and "does not exist" in await r.text()


async def _send(relay: RelayUnderTest, rcpt: str, subject: str) -> str:
    c = await relay.client()
    _, reply = await c.sendmail("app@acme.example", [rcpt], f"Subject: {subject}\r\n\r\nbody\r\n")
    await c.quit()
    return reply.rsplit(" ", 1)[1]


def _recipients(html: str) -> list[str]:
    return re.findall(r">(r\d@example\.com)</a>", html)


async def test_status_sorts_by_request_time_both_ways_and_pages_in_that_order(
        web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    relay, http = web
    for i in range(5):
        await _send(relay, f"r{i}@example.com", f"m{i}")
        await asyncio.sleep(0.01)  # distinct request times
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    await _sign_in(http, api_user="app1", api_key=relay.key)

    async def walk(order: str) -> list[str]:
        seen: list[str] = []
        path: str | None = f"/console/status?order={order}"
        while path:
            async with http.get(path) as r:
                html = await r.text()
                assert r.status == 200, html
            assert ('aria-sort="ascending"' if order == "oldest" else 'aria-sort="descending"') in html
            seen += _recipients(html)
            m = re.search(r'<a href="([^"]+)" rel="next">', html)
            path = m.group(1).replace("&amp;", "&") if m else None
        return seen

    newest, oldest = await walk("newest"), await walk("oldest")
    assert newest == [f"r{i}@example.com" for i in range(4, -1, -1)] and oldest == newest[::-1]
    for order, other in (("oldest", "newest"), ("newest", "oldest")):  # the header link turns the order around
        async with http.get(f"/console/status?order={order}") as r:
            link = re.search(r'<a class="sort" href="([^"]+)">Request time', await r.text())
        assert link is not None
        async with http.get(link.group(1).replace("&amp;", "&")) as r:
            assert _recipients(await r.text()) == (newest if other == "newest" else oldest)[:2]
    async with http.get("/console/status?order=sideways") as r:
        assert r.status == 400 and "order: newest or oldest" in await r.text()
    async with http.get("/console/status?order=newest") as r:  # a cursor of one order does not continue the other
        cursor = re.search(r'cursor=([^&"]+)', await r.text())
    assert cursor is not None
    async with http.get(f"/console/status?order=oldest&cursor={cursor.group(1)}") as r:
        assert r.status == 400 and "belongs to another search" in await r.text()


async def test_a_records_page_shows_every_event_field(web: Web) -> None:
    relay, http = web
    email_id = await _send(relay, "r1@example.com", "events")
    eng = Engagement(relay.storage)
    eng.record(email_id, "r1@example.com", RecipientEvent(EventType.OPEN, "192.0.2.7", "GoogleImageProxy",
                                                          machine=True))
    eng.record(email_id, "r1@example.com", RecipientEvent(EventType.CLICK, "192.0.2.8", "Reader/2.0",
                                                          link="https://shop.example/p?a=1&b=2"))
    eng.record(email_id, "r1@example.com", RecipientEvent(EventType.UNSUBSCRIBE, "192.0.2.9", "Phone/1",
                                                          reason_type=3))
    await eng.flush()
    await relay.storage.statuses.append_log(email_id, "r1@example.com", LogEntry(
        utcnow(), LogKind.FEEDBACK, "complaint: abuse report from example.com", rule="arf"))
    await _sign_in(http, api_user="app1", api_key=relay.key)
    async with http.get(f"/console/status/{email_id}") as r:
        html = await r.text()
        assert r.status == 200, html
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr data-event="(\w+)">(.*?)</tr>', html, re.S)}
    assert set(rows) == {"open", "click", "unsubscribe", "arf"}
    assert "machine open" in rows["open"] and "192.0.2.7" in rows["open"] and "GoogleImageProxy" in rows["open"]
    assert 'href="https://shop.example/p?a=1&amp;b=2"' in rows["click"] and "Reader/2.0" in rows["click"]
    assert "machine open" not in rows["click"] and "192.0.2.8" in rows["click"]
    assert "Reason 3: This is a fraudulent email" in rows["unsubscribe"] and "Phone/1" in rows["unsubscribe"]
    assert "complaint: abuse report from example.com" in rows["arf"]


class _Queues:
    """Queue views as QueueAdmin.list answers them (the console sorts the whole set)."""

    def __init__(self) -> None:
        rates = [{"5s": r, "15s": r, "30s": r} for r in (0.5, 3.0, 1.0)]
        self.views = [QueueView("app1", d, st, p, rates[i], rates[i], rates[i], None, None, None, False, None, None,
                                None)
                      for i, (d, st, p) in enumerate((("b.example", "active", 7), ("c.example", "idle", 0),
                                                      ("a.example", "paused", 3)))]

    def list(self, api_user: str | None = None) -> list[QueueView]:
        return list(self.views)


async def test_queue_table_sorts_every_queue_by_its_columns(web: Web) -> None:
    relay, http = web
    assert relay.app.http is not None
    relay.app.http.app[SERVICES_KEY].queues = _Queues()  # type: ignore[assignment]
    await _sign_in(http, api_user="app1", api_key=relay.key)

    async def order(query: str) -> tuple[list[str], str]:
        async with http.get("/console/queues" + query) as r:
            html = await r.text()
            assert r.status == 200, html
        return re.findall(r'data-queue="app1/([a-z.]+)"', html), html

    rows, html = await order("")
    assert rows == ["a.example", "b.example", "c.example"]  # API_USER, then domain
    token = _csrf(html)
    assert html.count(f'<input type="hidden" name="csrf" value="{token}">') == 1 + 3  # sign-out + each row's form
    assert '<th aria-sort="ascending"><a class="sort" href="/console/queues?sort=api_user&amp;dir=desc">' in html
    assert (await order("?sort=pending&dir=desc"))[0] == ["b.example", "a.example", "c.example"]
    assert (await order("?sort=pending"))[0] == ["c.example", "a.example", "b.example"]
    assert (await order("?sort=in&dir=desc"))[0] == ["c.example", "a.example", "b.example"]
    assert (await order("?sort=status"))[0] == ["b.example", "c.example", "a.example"]
    assert (await order("?sort=domain&dir=desc"))[0] == ["c.example", "b.example", "a.example"]
    async with http.get("/console/queues?sort=color") as r:
        assert r.status == 400 and "sort: one of" in await r.text()


async def test_sign_out_ends_the_session_and_a_long_period_is_refused_in_words(web: Web) -> None:
    relay, http = web
    await _sign_in(http, api_user="app1", api_key=relay.key)
    async with http.get("/console/status?start_date=2026-01-01&end_date=2026-02-15") as r:
        html = await r.text()
        assert r.status == 400 and "the period covers 46 days; one query covers at most 30 consecutive days" in html
        token = _csrf(html)
    async with http.post("/console/signout", data={"csrf": token}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/console/signin"
    async with http.get("/console/status", allow_redirects=False) as r:
        assert r.status == 303 and "signin" in r.headers["Location"]


class _ControlledQueues(_Queues):
    """Records what the console asked of QueueControl (the API's own tests drive the real QueueAdmin)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, ...]] = []

    def _view(self, domain: str) -> QueueView:
        return next(v for v in self.views if v.domain == domain)

    def pause(self, api_user: str, domain: str) -> QueueView:
        self.calls.append(("pause", api_user, domain))
        return self._view(domain)

    def resume(self, api_user: str, domain: str) -> QueueView:
        self.calls.append(("resume", api_user, domain))
        return self._view(domain)

    def set_rate(self, api_user: str, domain: str, rate: float | None) -> QueueView:
        self.calls.append(("rate", api_user, domain, str(rate)))
        return dataclasses.replace(self._view(domain), max_rate=rate)


async def test_pause_resume_and_rate_forms_reach_the_queue_service(web: Web) -> None:
    relay, http = web
    assert relay.app.http is not None
    queues = _ControlledQueues()
    relay.app.http.app[SERVICES_KEY].queues = queues  # type: ignore[assignment]
    await _sign_in(http, api_user="app1", api_key=relay.key)
    async with http.get("/console/queues") as r:
        token = _csrf(await r.text())
    for data, flash in (({"do": "pause"}, "Paused app1/b.example."), ({"do": "resume"}, "Resumed app1/b.example."),
                        ({"do": "rate", "max_rate": "2.5"}, "Rate of app1/b.example: 2.5 messages per second."),
                        ({"do": "rate", "max_rate": "fast"}, "max_rate: &#39;fast&#39; is not a number"),
                        ({"do": "rate", "max_rate": "-1"}, "max_rate: a number of messages per second from 0")):
        async with http.post("/console/queues/app1/b.example", data={"csrf": token, **data}) as r:
            assert flash in await r.text(), data
    assert queues.calls == [("pause", "app1", "b.example"), ("resume", "app1", "b.example"),
                            ("rate", "app1", "b.example", "2.5")]
    async with http.post("/console/queues/other/b.example", data={"csrf": token, "do": "pause"}) as r:
        assert r.status == 404  # another account's API_USER: no such queue, as in the API


async def test_a_failed_export_is_retried_from_the_exports_page(web: Web) -> None:
    relay, http = web
    worker = relay.app.exports
    assert worker is not None
    st = relay.storage
    await st.exports.create("crashed", relay.account_id, "email_status", StatusFilter(account_id=relay.account_id),
                            utcnow() - timedelta(days=1))
    got = await st.exports.claim(worker.node, utcnow())  # as if this node crashed while running it
    assert got is not None and got.id == "crashed" and await worker.recover() == 1
    await _sign_in(http, api_user="app1", api_key=relay.key)
    async with http.get("/console/exports") as r:
        html = await r.text()
    assert 'action="/console/exports/crashed/retry"' in html and "failed" in html
    async with http.post("/console/exports/crashed/retry", data={"csrf": _csrf(html)}) as r:
        assert r.status == 200 and "Export crashed was queued again." in await r.text()

    async def done() -> bool:
        t = await st.exports.get("crashed")
        return t is not None and t.status is ExportStatus.SUCCEEDED

    await wait_until(done, timeout=20)
    async with http.get("/console/exports") as r:
        assert 'href="/console/exports/crashed/download"' in await r.text()
    async with http.post("/console/exports/crashed/retry", data={"csrf": _csrf(html)}) as r:
        assert r.status == 409 and "only a failed export can be retried" in await r.text()


_FIELD = re.compile(r"<(input|select|textarea)\b([^>]*)>")


async def test_every_input_on_every_page_has_a_label(web: Web) -> None:
    relay, http = web
    assert relay.app.http is not None
    relay.app.http.app[SERVICES_KEY].queues = _Queues()  # type: ignore[assignment]
    email_id = await _send(relay, "r1@example.com", "labels")
    async with http.get("/console/signin") as r:
        pages_html = {"signin": await r.text()}
    await _sign_in(http, api_user="app1", api_key=relay.key)
    for path in ("status", f"status/{email_id}", "tracking", "queues", "lists/complaints", "lists/blocks",
                 "lists/bounces", "lists/unsubscribes", "lists/no_interceptions", "exports"):
        async with http.get("/console/" + path) as r:
            assert r.status == 200, path
            pages_html[path] = await r.text()
    checked = 0
    for path, html in pages_html.items():
        labelled = set(re.findall(r'<label for="([^"]+)"', html))
        for tag, attrs in _FIELD.findall(html):
            if 'type="hidden"' in attrs:
                continue
            m = re.search(r'\bid="([^"]+)"', attrs)
            assert "aria-label=" in attrs or (m and m.group(1) in labelled), f"{path}: <{tag}{attrs}> has no label"
            checked += 1
    assert checked > 30


async def test_spam_reports_filter_by_address_and_period(web: Web) -> None:
    relay, http = web
    now = utcnow()
    await relay.storage.suppressions.add([
        SuppressionEntry(account_id=relay.account_id, kind=ListKind.COMPLAINT, value=v, created_at=at,
                         expires_at=at + timedelta(days=180), reason="abuse report")
        for v, at in (("old@example.com", now - timedelta(days=20)), ("new@example.com", now - timedelta(days=1)))])
    await _sign_in(http, api_user="app1", api_key=relay.key)

    async def shown(query: str) -> list[str]:
        async with http.get("/console/lists/complaints" + query) as r:
            html = await r.text()
            assert r.status == 200, html
        return re.findall(r'name="value" value="([^"]+)"', html)

    assert await shown("") == ["new@example.com", "old@example.com"]  # newest first
    assert await shown("?email=OLD@example.com") == ["old@example.com"]
    since = (now - timedelta(days=5)).date().isoformat()
    assert await shown(f"?start_time={since}") == ["new@example.com"]
    assert await shown(f"?end_time={since}") == ["old@example.com"]
    async with http.get("/console/lists/complaints?email=nobody@example.com") as r:
        assert "No entries match these filters." in await r.text()
