"""The HTTP data API over real HTTP on loopback, against the app as `mailrelay serve` builds it
(SQLite and PostgreSQL): each endpoint's happy path and its 4xx cases, the 30-day rule, paging,
authentication failures and throttling, the search rate limit, and the OpenAPI document."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import aiosmtplib
import pytest

from relay.console.app import PREFIX as CONSOLE_PREFIX
from relay.http.app import routes
from relay.http.envelope import error_code
from relay.service.access import SERVICES_KEY
from storage.records import (
    EmailType,
    ListKind,
    LogEntry,
    LogKind,
    MessageRecord,
    RecipientOutcome,
    Status,
    SubmissionRecord,
    SubStatus,
    SuppressionEntry,
)
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until

ADMIN_TOKEN = "admin-token-0123456789abcdef"
B_KEY = "beta-key-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0)


def basic(user: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Api:
    relay: RelayUnderTest
    session: aiohttp.ClientSession
    base: str
    a: dict[str, str]  # account "acme", API_USER app1
    b: dict[str, str]  # account "beta", API_USER b1
    b_account_id: int

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None,
                   **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, headers=headers, **kw) as r:
            assert r.content_type == "application/json", (r.status, await r.text())
            body = await r.json()
            if r.status >= 400:
                assert set(body) == {"code", "message"} and body["code"] == error_code(r.status), body
            assert r.status < 500, body
            return r.status, body


def message(email_id: str, account_id: int, api_user: str, at: datetime, **kw: Any) -> MessageRecord:
    base: dict[str, Any] = dict(email_id=email_id, account_id=account_id, api_user=api_user,
                                sender="news@shop.example", subject=f"subject {email_id}", label=None,
                                email_type=None, size=100, request_time=at, request_ip="192.0.2.1")
    base.update(kw)
    return MessageRecord(**base)


async def seed(api: Api) -> None:
    st = api.relay.storage
    a_id = api.relay.account_id
    await st.statuses.record_submissions([
        SubmissionRecord(message("01AAA", a_id, "app1", NOW - timedelta(hours=1), label="promo",
                                 email_type=EmailType.MARKETING),
                         (RecipientOutcome("one@example.com", Status.SENDING),
                          RecipientOutcome("two@example.org", Status.INVALID, SubStatus.BLACKLIST,
                                           "Blacklist: Block:(worker:address in block list)", "block"))),
        SubmissionRecord(message("01AAB", a_id, "app1", NOW - timedelta(days=3)),
                         (RecipientOutcome("three@example.com", Status.SENDING),)),
        SubmissionRecord(message("01AAC", a_id, "app1", NOW - timedelta(days=40)),
                         (RecipientOutcome("old@example.com", Status.SENDING),)),
        SubmissionRecord(message("01BBB", api.b_account_id, "b1", NOW - timedelta(hours=2)),
                         (RecipientOutcome("one@example.com", Status.SENDING),)),
    ])
    await st.statuses.update_status("01AAA", "one@example.com", Status.DELIVERED, None, "250 ok",
                                    LogEntry(NOW - timedelta(minutes=50), LogKind.ATTEMPT, "250 2.0.0 ok", 250,
                                             "2.0.0", "mx.example.com", "127.0.0.2", 12))
    await st.statuses.update_status("01AAA", "one@example.com", Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST,
                                    "user unknown", LogEntry(NOW - timedelta(minutes=40), LogKind.FEEDBACK,
                                                             "bounce: 5.1.1 user unknown"))
    entries = []
    for acct in (a_id, api.b_account_id):
        entries += [
            SuppressionEntry(acct, ListKind.COMPLAINT, "c@example.com", created_at=NOW,
                             expires_at=NOW + timedelta(days=180), reason="abuse"),
            SuppressionEntry(acct, ListKind.BOUNCE, "gone@example.com", created_at=NOW,
                             expires_at=NOW + timedelta(days=30), reason="5.1.1 user unknown"),
            SuppressionEntry(acct, ListKind.BLOCK, "blocked.example", created_at=NOW),
            SuppressionEntry(acct, ListKind.UNSUBSCRIBE, "u@example.com", created_at=NOW, reason_code=2),
            SuppressionEntry(acct, ListKind.NO_INTERCEPTION, "vip@example.com", created_at=NOW),
        ]
    await st.suppressions.add(entries)


async def open_api(relay: RelayUnderTest) -> AsyncIterator[Api]:
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    b_id = await relay.add_user("b1", B_KEY, account="beta")
    async with aiohttp.ClientSession() as session:
        api = Api(relay, session, f"http://{host}:{port}", basic(relay.api_user, relay.key), basic("b1", B_KEY), b_id)
        await seed(api)
        yield api


# the tests' webhook receivers are on 127.0.0.1: private destinations allowed (off by default)
HTTP = {"http.listen": "127.0.0.1:0", "http.admin_token": ADMIN_TOKEN, "webhooks.allow_private_addresses": True}




# region email_status

async def test_email_status_happy_path_with_log_and_events(api: Api) -> None:
    status, body = await api.call("GET", "/v1/email_status", api.a)
    assert status == 200
    assert body["count"] == body["total"] == 3  # 40-day-old mail is outside the default 30 days
    assert body["result"][0]["message_id"] == "01AAA"  # newest first
    one = next(r for r in body["result"] if r["recipient"] == "one@example.com")
    assert one["status"] == 5 and one["sub_status"] == 506
    assert [e["kind"] for e in one["log"]] == ["accepted", "attempt", "feedback"]
    assert one["log"][1]["code"] == 250 and one["log"][1]["mx_ip"] == "127.0.0.2"
    assert [e["text"] for e in one["events"]] == ["bounce: 5.1.1 user unknown"]
    assert all(r["api_user"] == "app1" for r in body["result"])


async def test_email_status_filters(api: Api) -> None:
    async def ids(**params: str) -> list[tuple[str, str]]:
        status, body = await api.call("GET", "/v1/email_status", api.a, params=params)
        assert status == 200, body
        return sorted((r["message_id"], r["recipient"]) for r in body["result"])

    today = NOW.date()
    assert await ids(email="ONE@example.com") == [("01AAA", "one@example.com")]
    assert await ids(status="4") == [("01AAA", "two@example.org")]
    assert await ids(status="5,4", sub_status="401") == [("01AAA", "two@example.org")]
    assert await ids(label_id="promo", email_type="marketing") == [("01AAA", "one@example.com"),
                                                                   ("01AAA", "two@example.org")]
    assert await ids(domain_name="example.org") == [("01AAA", "two@example.org")]
    assert await ids(email_ids="01AAB,01AAC") == [("01AAB", "three@example.com"), ("01AAC", "old@example.com")]
    old = (NOW - timedelta(days=40)).date()
    assert await ids(send_date=old.isoformat()) == [("01AAC", "old@example.com")]
    start = (today - timedelta(days=29)).isoformat()
    assert len(await ids(start_date=start, end_date=today.isoformat())) == 3
    assert await ids(api_user="nobody") == []


async def test_email_status_paging(api: Api) -> None:
    seen = []
    for offset in range(3):
        status, body = await api.call("GET", "/v1/email_status", api.a, params={"limit": "1", "offset": str(offset)})
        assert status == 200 and body["count"] == 1 and body["total"] == 3
        seen.append((body["result"][0]["message_id"], body["result"][0]["recipient"]))
    assert len(set(seen)) == 3
    _, body = await api.call("GET", "/v1/email_status", api.a, params={"limit": "1", "offset": "3"})
    assert body["result"] == [] and body["count"] == 0


async def test_email_status_cursor_paging(api: Api) -> None:
    _, everything = await api.call("GET", "/v1/email_status", api.a)
    assert everything["next_cursor"] is None  # one page holds it all
    seen: list[tuple[str, str]] = []
    params = {"limit": "1"}
    for _ in range(3):
        status, body = await api.call("GET", "/v1/email_status", api.a, params=params)
        assert status == 200 and body["count"] == 1 and body["total"] == 3
        seen += [(r["message_id"], r["recipient"]) for r in body["result"]]
        params = {"limit": "1", "cursor": body["next_cursor"] or ""}
    assert body["next_cursor"] is None  # the third page is the last
    assert seen == [(r["message_id"], r["recipient"]) for r in everything["result"]]
    # a cursor continues only its own search: another account's key, or other filters, are a 400
    _, first = await api.call("GET", "/v1/email_status", api.a, params={"limit": "1"})
    status, body = await api.call("GET", "/v1/email_status", api.b, params={"cursor": first["next_cursor"]})
    assert status == 400 and "continues another search" in body["message"]
    status, body = await api.call("GET", "/v1/email_status", api.a, params={"cursor": first["next_cursor"],
                                                                            "status": "4"})
    assert status == 400 and "continues another search" in body["message"]


@pytest.mark.parametrize("params, message", [
    ({"cursor": "not-a-cursor"}, "cursor: not a next_cursor value"),
    ({"cursor": base64.urlsafe_b64encode(b'["x", 1, 2]').decode()}, "cursor: not a next_cursor value"),
    ({"cursor": base64.urlsafe_b64encode(b"[1, 2]").decode()}, "cursor: not a next_cursor value"),
    ({"cursor": "x" * 2000}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[9007199254740991, "a", "b", 1, "f"]').decode()}, "cursor: not a next"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, "a\\u0000", "b", 1, "f"]').decode()}, "cursor: not a next_cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, "\\ud800", "b", 1, "f"]').decode()}, "cursor: not a next_cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, "a", "b", true, "f"]').decode()}, "cursor: not a next_cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, "a", "b", 7, "0000"]').decode()}, "continues another search"),
    ({"send_date": "9999-12-31"}, "year out of range"),
    ({"start_date": "9999-12-30", "end_date": "9999-12-31"}, "year out of range"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, "a", "b", -5, "f"]').decode()}, "cursor: not a next_cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, "a", "b", 5, "f"]').decode(), "offset": "5"}, "either offset or cursor"),
])
async def test_email_status_bad_cursor(sqlite_api: Api, params: dict[str, str], message: str) -> None:
    status, body = await sqlite_api.call("GET", "/v1/email_status", sqlite_api.a, params=params)
    assert status == 400 and message in body["message"]


async def test_email_status_30_day_rule(api: Api) -> None:
    today = NOW.date()
    status, body = await api.call("GET", "/v1/email_status", api.a, params={
        "start_date": (today - timedelta(days=30)).isoformat(), "end_date": today.isoformat()})
    assert status == 400 and "31 days" in body["message"] and "at most 30 consecutive days" in body["message"]


@pytest.mark.parametrize("params, word", [
    ({"limit": "101"}, "limit"), ({"limit": "-1"}, "limit"), ({"limit": "x"}, "limit"), ({"offset": "-1"}, "offset"),
    ({"status": "7"}, "status"), ({"status": "abc"}, "status"), ({"sub_status": "999"}, "sub_status"),
    ({"send_date": "2024-13-01"}, "send_date"), ({"send_date": "yesterday"}, "send_date"),
    ({"start_date": "2024-01-01"}, "start_date"),
    ({"start_date": "2024-01-05", "end_date": "2024-01-01"}, "end_date"),
    ({"send_date": "2024-01-01", "start_date": "2024-01-01", "end_date": "2024-01-02"}, "send_date"),
    ({"email_type": "spam"}, "email_type"), ({"email": "x" * 400}, "email"),
])
async def test_email_status_bad_parameters(sqlite_api: Api, params: dict[str, str], word: str) -> None:
    status, body = await sqlite_api.call("GET", "/v1/email_status", sqlite_api.a, params=params)
    assert status == 400 and word in body["message"]


async def test_message_endpoint(api: Api) -> None:
    status, body = await api.call("GET", "/v1/messages/01AAA", api.a)
    assert status == 200 and sorted(r["recipient"] for r in body["result"]) == ["one@example.com",
                                                                                "two@example.org"]
    assert body["count"] == body["total"] == 2
    assert (await api.call("GET", "/v1/messages/NOPE", api.a))[0] == 404


async def test_admin_sees_every_account_and_selects_one(api: Api) -> None:
    _, body = await api.call("GET", "/v1/email_status", ADMIN, params={"email": "one@example.com"})
    assert sorted(r["message_id"] for r in body["result"]) == ["01AAA", "01BBB"]
    _, body = await api.call("GET", "/v1/email_status", ADMIN, params={"email": "one@example.com",
                                                                       "account": "beta"})
    assert [r["message_id"] for r in body["result"]] == ["01BBB"]
    status, body = await api.call("GET", "/v1/email_status", ADMIN, params={"account": "nope"})
    assert status == 404
    assert (await api.call("GET", "/v1/messages/01BBB", ADMIN))[0] == 200


async def test_search_rate_limit_is_per_account(sqlite_api: Api) -> None:
    api = sqlite_api
    for _ in range(60):
        assert (await api.call("GET", "/v1/email_status", api.a, params={"email_ids": "01AAA"}))[0] == 200
    status, body = await api.call("GET", "/v1/email_status", api.a, params={"email_ids": "01AAA"})
    assert status == 429 and "at most 60 status searches per minute" in body["message"]
    assert (await api.call("GET", "/v1/email_status", api.b))[0] == 200  # another account's budget


async def test_http_limits_come_from_config(relay_factory: RelayFactory) -> None:
    relay = await relay_factory({**HTTP, "http.search_per_minute": 2, "http.request_timeout": "20s"})
    async for api in open_api(relay):
        for _ in range(2):
            assert (await api.call("GET", "/v1/email_status", api.a))[0] == 200
        status, body = await api.call("GET", "/v1/email_status", api.a)
        assert status == 429 and "at most 2 status searches per minute" in body["message"]
        assert relay.app.http is not None
        assert relay.app.http.app[SERVICES_KEY].handler_timeout == 20.0
# endregion


# region suppression lists

@pytest.mark.parametrize("path, field, value, extra", [
    ("/v1/complaints", "email", "c@example.com", {"reason": "abuse"}),
    ("/v1/bounces", "email", "gone@example.com", {"count": 1, "reason": "5.1.1 user unknown", "expired": False}),
    ("/v1/blocks", "email_or_domain", "blocked.example", {"api_user": "all", "expire_time": None,
                                                           "expired": False}),
    ("/v1/unsubscribes", "email", "u@example.com", {"type": 2, "reason": "This is spam"}),
    ("/v1/no_interceptions", "email_or_domain", "vip@example.com", {"api_user": "all"}),
])
async def test_list_get(api: Api, path: str, field: str, value: str, extra: dict[str, Any]) -> None:
    status, body = await api.call("GET", path, api.a)
    assert status == 200 and body["count"] == body["total"] == 1
    row = body["result"][0]
    assert row[field] == value and extra.items() <= row.items()
    _, body = await api.call("GET", path, api.a, params={field: "other@example.com"})
    assert body["total"] == 0
    _, body = await api.call("GET", path, api.a, params={field: value.upper()})
    assert body["total"] == 1
    _, body = await api.call("GET", path, api.a, params={"start_time": (NOW + timedelta(minutes=1)).isoformat()})
    assert body["total"] == 0
    assert (await api.call("GET", path, api.a, params={"limit": "500"}))[0] == 400
    assert (await api.call("GET", path, api.a, params={"start_time": "soon"}))[0] == 400
    assert (await api.call("GET", path, api.a, params={field: "not an address"}))[0] == 400
    status, body = await api.call("GET", path, ADMIN)
    assert status == 400 and "account" in body["message"]
    _, body = await api.call("GET", path, ADMIN, params={"account": "beta"})
    assert body["total"] == 1


async def test_blocks_post_delete_and_paging(api: Api) -> None:
    values = [f"user{i}@example.net" for i in range(12)] + ["whole.example"]
    expire = (NOW + timedelta(days=7)).isoformat()
    status, body = await api.call("POST", "/v1/blocks", api.a, json={"email_or_domain": values,
                                                                    "api_user": "app1", "expire_time": expire})
    assert status == 200 and body == {"count": 13}
    _, page1 = await api.call("GET", "/v1/blocks", api.a, params={"limit": "10"})
    _, page2 = await api.call("GET", "/v1/blocks", api.a, params={"limit": "10", "offset": "10"})
    assert page1["total"] == page2["total"] == 14 and page1["count"] == 10 and page2["count"] == 4
    got = {r["email_or_domain"] for r in page1["result"] + page2["result"]}
    assert got == {*values, "blocked.example"}
    row = next(r for r in page1["result"] + page2["result"] if r["email_or_domain"] == "whole.example")
    assert row["api_user"] == "app1" and row["expire_time"] == f"{NOW + timedelta(days=7):%Y-%m-%d %H:%M:%S}"
    status, body = await api.call("DELETE", "/v1/blocks", api.a,
                                  params={"email_or_domain": "whole.example,user0@example.net"})
    assert status == 200 and body["count"] == 2
    _, body = await api.call("GET", "/v1/blocks", api.a)
    assert body["total"] == 12
    # the api_user filter: exactly that scope; another account's API_USER is a 400, never a wider view
    _, body = await api.call("GET", "/v1/blocks", api.a, params={"api_user": "app1", "limit": "100"})
    assert body["total"] == 11 and {r["api_user"] for r in body["result"]} == {"app1"}
    _, body = await api.call("GET", "/v1/blocks", api.a, params={"api_user": "all"})
    assert body["total"] == 1 and body["result"][0]["email_or_domain"] == "blocked.example"
    narrow = {"api_user": "app1", "email_or_domain": "user1@example.net"}
    _, body = await api.call("GET", "/v1/blocks", api.a, params=narrow)
    assert body["total"] == 1
    status, body = await api.call("GET", "/v1/blocks", api.a, params={"api_user": "b1"})
    assert status == 400 and "not an API user of this account" in body["message"]


@pytest.mark.parametrize("body, word", [
    ({}, "email_or_domain"), ({"email_or_domain": []}, "email_or_domain"), ({"email_or_domain": 5}, "email_or_domain"),
    ({"email_or_domain": ["ok@example.com", "bad address"]}, "bad address"),
    ({"email_or_domain": "a@example.com", "api_user": "b1"}, "api_user"),
    ({"email_or_domain": "a@example.com", "api_user": 7}, "api_user"),
    ({"email_or_domain": "a@example.com", "expire_time": "2000-01-01"}, "future"),
    ({"email_or_domain": "a@example.com", "expire_time": "tomorrow"}, "expire_time"),
    ({"email_or_domain": ["x@example.com"] * 1001}, "1000"),
])
async def test_blocks_post_bad_bodies(sqlite_api: Api, body: dict[str, Any], word: str) -> None:
    status, resp = await sqlite_api.call("POST", "/v1/blocks", sqlite_api.a, json=body)
    assert status == 400 and word in resp["message"], resp


async def test_post_requires_a_json_object(sqlite_api: Api) -> None:
    api = sqlite_api
    assert (await api.call("POST", "/v1/blocks", {**api.a, "Content-Type": "text/plain"}, data=b"x"))[0] == 415
    status, body = await api.call("POST", "/v1/blocks", {**api.a, "Content-Type": "application/json"}, data=b"{oops")
    assert status == 400 and "JSON" in body["message"]
    assert (await api.call("POST", "/v1/blocks", api.a, json=[1, 2]))[0] == 400
    big = json.dumps({"email_or_domain": ["a@example.com"], "reason": "x" * (2 * 1024 * 1024)}).encode()
    status, body = await api.call("POST", "/v1/blocks", {**api.a, "Content-Type": "application/json"},
                                  data=io.BytesIO(big))
    assert status == 413


async def test_unsubscribes_and_no_interceptions_post_delete(api: Api) -> None:
    status, body = await api.call("POST", "/v1/unsubscribes", api.a, json={"email": "x@example.com", "type": 3})
    assert status == 200 and body["count"] == 1
    _, body = await api.call("GET", "/v1/unsubscribes", api.a, params={"email": "x@example.com"})
    assert body["result"][0]["type"] == 3 and body["result"][0]["unsubscribe_time"]
    assert (await api.call("POST", "/v1/unsubscribes", api.a, json={"email": "x@example.com", "type": 4}))[0] == 400
    assert (await api.call("POST", "/v1/unsubscribes", api.a, json={"email": "example.com"}))[0] == 400
    status, body = await api.call("POST", "/v1/no_interceptions", api.a, json={"email_or_domain": ["partner.example"]})
    assert status == 200 and body["count"] == 1
    assert (await api.call("DELETE", "/v1/no_interceptions", api.a,
                           params={"email_or_domain": "partner.example"}))[1]["count"] == 1
    assert (await api.call("DELETE", "/v1/unsubscribes", api.a, params={"email": "x@example.com"}))[1]["count"] == 1
    assert (await api.call("DELETE", "/v1/unsubscribes", api.a))[0] == 400


async def test_complaint_delete_warns_and_policy_sees_it(api: Api) -> None:
    status, body = await api.call("DELETE", "/v1/complaints", api.a, params={"email": "c@example.com"})
    assert status == 200 and body["count"] == 1 and "next mail" in body["warning"]
    hits = await api.relay.storage.suppressions.hits(api.relay.account_id, "app1", "c@example.com", "example.com",
                                                      NOW)
    assert not hits.complaint
    _, body = await api.call("GET", "/v1/complaints", api.b)
    assert body["total"] == 1  # the other account's entry is untouched


async def test_block_added_over_http_rejects_the_next_rcpt(sqlite_api: Api) -> None:
    api = sqlite_api
    await api.call("POST", "/v1/blocks", api.a, json={"email_or_domain": "stop@example.com"})
    c = await api.relay.client()
    await c.mail("app@acme.example")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as exc:
        await c.rcpt("stop@example.com")
    assert exc.value.code == 550 and "Blacklist: Block:(worker:address in block list)" in exc.value.message
    await c.quit()
# endregion


# region auth

async def test_auth_failures_are_401_json(sqlite_api: Api) -> None:
    api = sqlite_api
    for headers in ({}, {"Authorization": "Basic !!!"}, {"Authorization": "Digest abc"},
                    basic("app1", "wrong-key"), basic("nobody", "x"), {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}):
        status, body = await api.call("GET", "/v1/email_status", headers)
        assert status == 401, headers
        assert body["code"] == 30000  # EngageLab's business code for a failed authentication
        if headers.get("Authorization", "").startswith("Bearer"):
            assert "not the operator token" in body["message"]
    status, _ = await api.call("GET", "/openapi.json")
    assert status == 200


async def test_customer_cannot_use_admin_endpoints(sqlite_api: Api) -> None:
    api = sqlite_api
    status, body = await api.call("GET", "/v1/api_users", api.a)  # customers: their own account only
    assert status == 200 and [u["api_user"] for u in body["result"]] == ["app1"]
    assert (await api.call("GET", "/v1/api_users", api.a, params={"account": "beta"}))[0] == 403
    assert (await api.call("POST", "/v1/api_users", api.a, json={"api_user": "x", "account": "acme"}))[0] == 403
    assert (await api.call("DELETE", "/v1/api_users/b1", api.a))[0] == 403
    assert (await api.call("GET", "/v1/email_status", api.a, params={"account": "beta"}))[0] == 403


async def test_failed_auth_is_throttled_like_smtp(relay_factory: RelayFactory) -> None:
    relay = await relay_factory({**HTTP, "limits.auth_failures_per_ip": 5})
    async for api in open_api(relay):
        for _ in range(5):
            assert (await api.call("GET", "/v1/email_status", basic("app1", "wrong")))[0] == 401
        status, body = await api.call("GET", "/v1/email_status", api.a)  # even the right key, from this IP
        assert status == 429 and "too many authentication failures" in body["message"]
        c = await relay.client(login=False)  # the same throttle guards SMTP AUTH
        with pytest.raises(aiosmtplib.SMTPException):  # 421 and close, before any key check
            await c.login("app1", relay.key)


async def test_unknown_route_and_method_are_json(sqlite_api: Api) -> None:
    api = sqlite_api
    status, body = await api.call("GET", "/v1/nothing", api.a)
    assert status == 404 and body["message"] == "no such route"
    status, body = await api.call("GET", "/nothing")
    assert status == 404
    status, body = await api.call("PATCH", "/v1/blocks", api.a)
    assert status == 405
    assert (await api.call("POST", "/v1/bounces", api.a, json={}))[0] == 405
# endregion


# region api users

async def test_api_users_admin(sqlite_api: Api) -> None:
    api = sqlite_api
    status, body = await api.call("POST", "/v1/api_users", ADMIN, json={"api_user": "new1", "account": "gamma"})
    assert status == 201 and body["api_user"] == "new1" and body["account"] == "gamma" and body["api_key"]
    key = body["api_key"]
    assert (await api.call("GET", "/v1/email_status", basic("new1", key)))[0] == 200
    assert (await api.call("POST", "/v1/api_users", ADMIN, json={"api_user": "new1", "account": "gamma"}))[0] == 409
    assert (await api.call("POST", "/v1/api_users", ADMIN, json={"api_user": "all", "account": "gamma"}))[0] == 400
    assert (await api.call("POST", "/v1/api_users", ADMIN, json={"api_user": "a b", "account": "gamma"}))[0] == 400
    assert (await api.call("POST", "/v1/api_users", ADMIN, json={"api_user": "ok"}))[0] == 400
    _, body = await api.call("GET", "/v1/api_users", ADMIN, params={"account": "gamma"})
    assert [u["api_user"] for u in body["result"]] == ["new1"] and "api_key" not in body["result"][0]
    assert "key_hash" not in body["result"][0]
    _, body = await api.call("GET", "/v1/api_users", ADMIN)
    assert {u["api_user"] for u in body["result"]} == {"app1", "b1", "new1"}
    status, body = await api.call("DELETE", "/v1/api_users/new1", ADMIN)
    assert status == 200 and body["active"] is False
    assert (await api.call("GET", "/v1/email_status", basic("new1", key)))[0] == 401  # at once on this node
    assert (await api.call("DELETE", "/v1/api_users/new1", ADMIN))[0] == 404
# endregion


# region queues

async def test_queues_need_delivery(sqlite_api: Api) -> None:
    async with sqlite_api.session.get(sqlite_api.base + "/v1/queues", headers=sqlite_api.a) as r:
        assert r.status == 503 and "delivery is not enabled" in (await r.json())["message"]


async def test_queues(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await relay_factory({**HTTP, "delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                                 "delivery.ehlo_name": "relay.test"})
    async for api in open_api(relay):
        c = await relay.client()
        await c.sendmail("app@acme.example", ["a@example.com"], "Subject: 1\r\n\r\nx\r\n")
        await c.quit()
        await wait_until(lambda: len(sink.messages) == 1)
        status, body = await api.call("GET", "/v1/queues", api.a)
        assert status == 200 and [(q["api_user"], q["domain"]) for q in body["result"]] == [("app1", "example.com")]
        q = body["result"][0]
        assert set(q["in_rate"]) == {"5s", "15s", "30s"} and q["pending"] == 0
        _, body = await api.call("GET", "/v1/queues", api.b)
        assert body["result"] == []
        status, body = await api.call("GET", "/v1/queues/app1/example.com", api.a)
        assert status == 200 and body["queue"]["domain"] == "example.com" and isinstance(body["series"], list)
        status, body = await api.call("POST", "/v1/queues/app1/example.com/pause", api.a)
        assert status == 200 and body["status"] == "paused" and body["pause_reason"] == "admin"
        status, body = await api.call("POST", "/v1/queues/app1/example.com/resume", api.a)
        assert status == 200 and body["status"] != "paused"
        status, body = await api.call("POST", "/v1/queues/app1/example.com/recover", ADMIN)
        assert status == 200
        status, body = await api.call("PUT", "/v1/queues/app1/example.com/rate", api.a, json={"max_rate": 5})
        assert status == 200 and body["max_rate"] == 5
        status, body = await api.call("PUT", "/v1/queues/app1/example.com/rate", api.a, json={"max_rate": None})
        assert status == 200 and body["max_rate"] is None
        for bad in ({"max_rate": -1}, {"max_rate": "fast"}, {"max_rate": True}):
            assert (await api.call("PUT", "/v1/queues/app1/example.com/rate", api.a, json=bad))[0] == 400
        assert (await api.call("GET", "/v1/queues/app1/nowhere.example", api.a))[0] == 404
        assert (await api.call("POST", "/v1/queues/app1/nowhere.example/pause", api.a))[0] == 404
        # another account's queue is invisible, exactly like a missing one
        assert (await api.call("GET", "/v1/queues/app1/example.com", api.b))[0] == 404
        assert (await api.call("POST", "/v1/queues/app1/example.com/pause", api.b))[0] == 404
# endregion


# region openapi

def _console(path: str) -> bool:
    """The web console's pages (and the redirect of ``/`` to them) are not API routes."""
    return path == "/" or path.startswith(CONSOLE_PREFIX)


async def test_openapi_matches_the_routes(sqlite_api: Api) -> None:
    status, doc = await sqlite_api.call("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(m, p) for m, p, _ in routes()}
    assert documented == served
    app = sqlite_api.relay.app.http
    assert app is not None
    registered = {(r.method, r.resource.canonical) for r in app.app.router.routes()
                  if r.method != "HEAD" and r.resource is not None and not _console(r.resource.canonical)}
    assert registered == served
    for path, ops in doc["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(__import__("re").findall(r"{(\w+)}", path)), path


async def test_openapi_documents_unknown_account_404(sqlite_api: Api) -> None:
    # found by schemathesis: an operator's account=NAME naming no account answers 404
    _, doc = await sqlite_api.call("GET", "/openapi.json")
    taking = [(m, p) for p, ops in doc["paths"].items() for m, op in ops.items()
              if any(q["name"] == "account" and q["in"] == "query" for q in op.get("parameters", []))]
    assert ("post", "/v1/blocks/upload") in taking and ("delete", "/v1/blocks") in taking
    for m, p in taking:
        assert "404" in doc["paths"][p][m]["responses"], (m, p)
    status, body = await sqlite_api.call("DELETE", "/v1/blocks", ADMIN,
                                         params={"email_or_domain": "x.example", "account": "nobody"})
    assert status == 404 and "does not exist" in body["message"]
# endregion


async def test_lone_surrogates_are_400_and_store_nothing(api: Api) -> None:
    for path, body in (("/v1/exports", {"label_id": "\ud800"}),
                       ("/v1/blocks", {"email_or_domain": "x@example.com", "reason": "\ud800"}),
                       ("/v1/blocks", {"email_or_domain": "x@example.com", "api_user": "\udfff"})):
        raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as the escape \ud800
        status, resp = await api.call("POST", path, {**api.a, "Content-Type": "application/json"}, data=raw)
        assert status == 400 and "surrogate" in resp["message"], (path, resp)
    assert (await api.call("GET", "/v1/exports", api.a))[1]["total"] == 0  # nothing was queued
    assert (await api.call("GET", "/v1/exports", ADMIN))[0] == 200
    status, _ = await api.call("GET", "/v1/email_status?label_id=%ED%A0%80", api.a)  # surrogate as bytes
    assert status in (200, 400)  # decoded to U+FFFD (a real character) or refused: never a 500


async def test_nul_characters_and_calendar_edges_are_400_on_both_backends(api: Api) -> None:
    status, body = await api.call("POST", "/v1/blocks", api.a, json={"email_or_domain": "nul@example.com",
                                                                     "reason": "a\u0000b"})
    assert status == 400 and "NUL" in body["message"]
    status, body = await api.call("POST", "/v1/blocks", api.a, json={"email_or_domain": ["x@example.com\u0000"]})
    assert status == 400 and "NUL" in body["message"]
    for path in ("/v1/messages/a%00b", "/v1/exports/a%00b", "/v1/exports/a%00b/download"):
        status, body = await api.call("GET", path, api.a)
        assert status == 400 and "NUL" in body["message"], path
    status, body = await api.call("POST", "/v1/exports", api.a, json={"send_date": "9999-12-31"})
    assert status == 400 and "year out of range" in body["message"]
    status, body = await api.call("GET", "/v1/email_status", api.a, params={"email": "a\u0000b@example.com"})
    assert status == 400 and "NUL" in body["message"]
    nested = "[" * 100_000 + "]" * 100_000
    status, body = await api.call("POST", "/v1/blocks", {**api.a, "Content-Type": "application/json"}, data=nested)
    assert status in (400, 413)


async def test_database_outage_is_503_not_500(api: Api) -> None:
    assert (await api.call("GET", "/v1/blocks", api.a))[0] == 200  # the key check is cached now ...
    await api.relay.storage.close()  # ... but the user's row is read at every request: this fails the check
    for method, path, kw in (("GET", "/v1/email_status", {"params": {"email_ids": "01AAA"}}),
                             ("POST", "/v1/blocks", {"json": {"email_or_domain": "x@example.com"}})):
        async with api.session.request(method, api.base + path, headers=api.a, **kw) as r:
            body = await r.json()
            assert r.status == 503 and "database is unavailable" in body["message"], body
            assert r.headers["Retry-After"] == "5"
