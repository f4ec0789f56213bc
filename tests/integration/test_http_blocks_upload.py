"""``POST /v1/blocks/upload``: CSV or text, streamed, bad lines reported with their numbers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tests.integration.conftest import RelayFactory
from tests.integration.test_http_api import HTTP, Api, open_api


async def test_upload_reports_bad_lines_with_numbers(sqlite_api: Api) -> None:
    api = sqlite_api
    body = (b"email_or_domain,api_user\n"  # header
            b"good1@example.com\n"
            b"not an address\n"
            b"\n"
            b"# a comment\n"
            b'"quoted.example",app1\n'
            b"a@example.com,b,c,d\n"
            b"x@example.com,b1\n"  # another account's API user
            b"Good2@Example.com,all")  # no final newline
    status, resp = await api.call("POST", "/v1/blocks/upload", {**api.a, "Content-Type": "text/csv"}, data=body)
    assert status == 200, resp
    assert resp["imported"] == 3 and resp["more_errors"] == 0
    assert [e["line"] for e in resp["errors"]] == [3, 7, 8]
    assert "4 fields" in resp["errors"][1]["message"] and "api_user" in resp["errors"][2]["message"]
    _, listed = await api.call("GET", "/v1/blocks", api.a, params={"limit": "100"})
    got = {(r["email_or_domain"], r["api_user"]) for r in listed["result"]}
    assert {("good1@example.com", "all"), ("quoted.example", "app1"), ("good2@example.com", "all")} <= got


async def test_large_upload_is_streamed_and_errors_capped(sqlite_api: Api) -> None:
    api = sqlite_api
    n = 200_000

    async def body() -> AsyncIterator[bytes]:  # sent in pieces: the server never sees it whole
        for start in range(0, n, 10_000):
            yield "".join(f"user{i}@bulk.example\n" if i % 1000 else "bad line\n"
                          for i in range(start, start + 10_000)).encode()

    status, resp = await api.call("POST", "/v1/blocks/upload", {**api.a, "Content-Type": "text/plain"},
                                  data=body())
    assert status == 200, resp
    assert resp["imported"] == n - 200 and len(resp["errors"]) == 100 and resp["more_errors"] == 100
    assert resp["errors"][0]["line"] == 1 and resp["errors"][1]["line"] == 1001
    _, listed = await api.call("GET", "/v1/blocks", api.a, params={"email_or_domain": "user199999@bulk.example"})
    assert listed["total"] == 1


async def test_upload_rejects_huge_lines_and_foreign_scope(sqlite_api: Api) -> None:
    api = sqlite_api
    status, resp = await api.call("POST", "/v1/blocks/upload", api.a, data=b"ok@example.com\n" + b"x" * 100_000)
    assert status == 400 and "line 2" in resp["message"] and "1 entries" not in resp["message"]
    status, resp = await api.call("POST", "/v1/blocks/upload", api.a, params={"api_user": "b1"}, data=b"a@b.example\n")
    assert status == 400 and "api_user" in resp["message"]


async def test_empty_upload_imports_nothing(sqlite_api: Api) -> None:
    # found by schemathesis: an empty body has no stream to read lines from (was a 500)
    api = sqlite_api
    for body in (b"", None):
        status, resp = await api.call("POST", "/v1/blocks/upload", {**api.a, "Content-Type": "text/csv"}, data=body)
        assert status == 200 and resp == {"imported": 0, "errors": [], "more_errors": 0}, resp


async def test_spreadsheet_csv_with_byte_order_mark(sqlite_api: Api) -> None:
    api = sqlite_api
    body = "\ufeffemail_or_domain,api_user\r\nbom@example.com,all\r\nmid\ufeffdle@example.com\r\nsingle\r\n".encode()
    status, resp = await api.call("POST", "/v1/blocks/upload", {**api.a, "Content-Type": "text/csv"}, data=body)
    assert status == 200 and resp["imported"] == 1, resp  # the header row is recognised despite the mark
    assert [e["line"] for e in resp["errors"]] == [3, 4]
    assert "U+FEFF" in resp["errors"][0]["message"] and "two labels" in resp["errors"][1]["message"]
    _, listed = await api.call("GET", "/v1/blocks", api.a, params={"email_or_domain": "bom@example.com"})
    assert listed["total"] == 1  # stored without the mark, so it matches the recipient


async def test_upload_refuses_json_and_forms(sqlite_api: Api) -> None:
    api = sqlite_api
    for ctype in ("application/json", "multipart/form-data; boundary=x"):
        status, resp = await api.call("POST", "/v1/blocks/upload", {**api.a, "Content-Type": ctype}, data=b"{}")
        assert status == 415 and "text/csv" in resp["message"]


async def test_upload_sets_expiry_per_line(sqlite_api: Api) -> None:
    api = sqlite_api
    body = (b"email_or_domain,api_user,expire_time\n"
            b"later@example.com,app1,2099-01-31\n"
            b"stamp@example.com,,2099-01-31T12:30:00+02:00\n"
            b"forever@example.com,all,\n"
            b"past@example.com,all,2001-01-01\n"
            b"when@example.com,all,someday\n")
    status, resp = await api.call("POST", "/v1/blocks/upload", {**api.a, "Content-Type": "text/csv"}, data=body)
    assert status == 200 and resp["imported"] == 3, resp
    assert [e["line"] for e in resp["errors"]] == [5, 6]
    assert "not in the future" in resp["errors"][0]["message"] and "expire_time" in resp["errors"][1]["message"]
    _, listed = await api.call("GET", "/v1/blocks", api.a, params={"limit": "100"})
    expiry = {r["email_or_domain"]: r["expire_time"] for r in listed["result"]}
    assert expiry["later@example.com"] == "2099-01-31 00:00:00"  # UTC, in EngageLab's block time format
    assert expiry["stamp@example.com"] == "2099-01-31 10:30:00"
    assert expiry["forever@example.com"] is None


async def test_slow_uploads_bound_each_wait_not_the_whole_request(relay_factory: RelayFactory) -> None:
    relay = await relay_factory({**HTTP, "http.request_timeout": "1s"})
    async for api in open_api(relay):
        async def steady() -> AsyncIterator[bytes]:  # 1.6 s in all, never 1 s without data
            for i in range(4):
                yield f"steady{i}@example.com\n".encode()
                await asyncio.sleep(0.4)

        status, resp = await api.call("POST", "/v1/blocks/upload", {**api.a, "Content-Type": "text/plain"},
                                      data=steady())
        assert status == 200 and resp["imported"] == 4, resp

        async def stalls() -> AsyncIterator[bytes]:
            yield b"first@example.com\nsecond@example.com\n"
            await asyncio.sleep(2.5)
            yield b"never@example.com\n"

        status, resp = await api.call("POST", "/v1/blocks/upload", {**api.a, "Content-Type": "text/plain"},
                                      data=stalls())
        assert status == 408 and "after line 2" in resp["message"] and "the 2 entries" in resp["message"], resp
        _, listed = await api.call("GET", "/v1/blocks", api.a, params={"email_or_domain": "second@example.com"})
        assert listed["total"] == 1


async def test_header_row_after_comments(sqlite_api: Api) -> None:
    body = b"# exported from our CRM\n\nEmail Address,api_user\nh1@example.com,all\n"
    status, resp = await sqlite_api.call("POST", "/v1/blocks/upload", {**sqlite_api.a, "Content-Type": "text/csv"},
                                         data=body)
    assert status == 200 and resp == {"imported": 1, "errors": [], "more_errors": 0}, resp
