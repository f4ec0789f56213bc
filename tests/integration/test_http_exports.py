"""Offline exports over real HTTP (SQLite and PostgreSQL): create → poll → download → gunzip → the CSV
rows match the status records (beyond the 30-day cap of the search); 410 once the file expired
(the stored finish time is moved back, no sleeping); retry of a failed export; start-up recovery."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import timedelta
from typing import Any

import pytest

from relay.exports import COLUMNS, INTERRUPTED
from storage.records import ExportStatus, StatusFilter
from tests.integration.relay_fixture import wait_until
from tests.integration.test_http_api import ADMIN, NOW, Api


async def finished(api: Api, export_id: str, who: dict[str, str]) -> dict[str, Any]:
    box: dict[str, Any] = {}

    async def done() -> bool:
        status, body = await api.call("GET", f"/v1/exports/{export_id}", who)
        assert status == 200, body
        box["task"] = body
        return body["status"] in ("succeeded", "failed")

    await wait_until(done, timeout=20)
    return box["task"]


async def download(api: Api, export_id: str, who: dict[str, str]) -> tuple[int, bytes, str]:
    async with api.session.get(f"{api.base}/v1/exports/{export_id}/download", headers=who) as r:
        return r.status, await r.read(), r.content_type


def csv_rows(data: bytes) -> list[dict[str, str]]:
    text = gzip.decompress(data).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


async def test_export_create_poll_download(api: Api) -> None:
    start = (NOW - timedelta(days=90)).date().isoformat()  # 91 days: no 30-day cap for exports
    status, task = await api.call("POST", "/v1/exports", api.a, json={"start_date": start,
                                                                     "end_date": NOW.date().isoformat()})
    assert status == 201 and task["status"] in ("queued", "running", "succeeded") and task["type"] == "email_status"
    task = await finished(api, task["id"], api.a)
    assert task["status"] == "succeeded" and task["progress"] == 100 and task["rows"] == task["total_rows"] == 4
    assert task["start_time"] and task["end_time"] and task["download_url"] == f"/v1/exports/{task['id']}/download"
    assert task["expire_time"] and not task["expired"] and task["file_size"] > 0
    status, data, ctype = await download(api, task["id"], api.a)
    assert status == 200 and ctype == "application/gzip"
    rows = csv_rows(data)
    assert sorted((r["email_id"], r["recipient"]) for r in rows) == [
        ("01AAA", "one@example.com"), ("01AAA", "two@example.org"), ("01AAB", "three@example.com"),
        ("01AAC", "old@example.com")]  # 01AAC is 40 days old; B's 01BBB is not A's
    one = next(r for r in rows if r["recipient"] == "one@example.com")
    assert one["status"] == "5" and one["sub_status"] == "506" and one["api_user"] == "app1"
    assert [e["kind"] for e in json.loads(one["log"])] == ["accepted", "attempt", "feedback"]
    _, body = await api.call("GET", "/v1/exports", api.a)
    assert body["total"] == 1 and body["result"][0]["id"] == task["id"]

    status, task2 = await api.call("POST", "/v1/exports", api.a, json={"status": [4], "email_ids": "01AAA,01AAB"})
    assert status == 201
    task2 = await finished(api, task2["id"], api.a)
    assert task2["rows"] == 1 and task2["filters"]["status"] == [4]
    rows = csv_rows((await download(api, task2["id"], api.a))[1])
    assert [(r["email_id"], r["recipient"], r["sub_status"]) for r in rows] == [("01AAA", "two@example.org", "401")]
    _, body = await api.call("GET", "/v1/exports", api.a, params={"limit": "1"})
    assert body["total"] == 2 and body["count"] == 1 and body["result"][0]["id"] == task2["id"]


async def test_export_download_is_410_after_expiry(api: Api) -> None:
    _, task = await api.call("POST", "/v1/exports", api.a)
    task = await finished(api, task["id"], api.a)
    assert (await download(api, task["id"], api.a))[0] == 200
    worker = api.relay.app.exports
    assert worker is not None and worker.path(task["id"]).exists()
    assert await worker.sweep() == 0  # not old enough
    eight_days_ms = 8 * 86_400_000
    await api.relay.storage.executor.execute_script(  # type: ignore[attr-defined]
        f"UPDATE exports SET finished_at = finished_at - {eight_days_ms} WHERE id = '{task['id']}'")
    status, body = await api.call("GET", f"/v1/exports/{task['id']}/download", api.a)
    assert status == 410 and "expired" in body["message"] and "create a new export" in body["message"]
    assert await worker.sweep() == 1
    assert not worker.path(task["id"]).exists()
    _, shown = await api.call("GET", f"/v1/exports/{task['id']}", api.a)
    assert shown["expired"] is True and shown["status"] == "succeeded"  # the row stays
    assert (await api.call("GET", f"/v1/exports/{task['id']}/download", api.a))[0] == 410


async def test_failed_export_can_be_retried(sqlite_api: Api) -> None:
    api = sqlite_api
    worker = api.relay.app.exports
    assert worker is not None
    worker.directory.parent.mkdir(parents=True, exist_ok=True)
    worker.directory.write_text("not a directory")  # the export cannot write its file
    _, task = await api.call("POST", "/v1/exports", api.a)
    task = await finished(api, task["id"], api.a)
    assert task["status"] == "failed" and task["error"] and task["download_url"] is None
    status, body = await api.call("GET", f"/v1/exports/{task['id']}/download", api.a)
    assert status == 409 and "failed" in body["message"]
    worker.directory.unlink()
    status, again = await api.call("POST", f"/v1/exports/{task['id']}/retry", api.a)
    assert status == 200 and again["status"] in ("queued", "running", "succeeded")
    again = await finished(api, task["id"], api.a)
    assert again["status"] == "succeeded" and again["attempts"] == 2 and again["error"] is None
    assert len(csv_rows((await download(api, task["id"], api.a))[1])) == 4  # all time: no dates, no cap
    status, body = await api.call("POST", f"/v1/exports/{task['id']}/retry", api.a)
    assert status == 409 and "only a failed export" in body["message"]


async def test_interrupted_export_fails_at_start_up(sqlite_api: Api) -> None:
    api = sqlite_api
    worker = api.relay.app.exports
    assert worker is not None
    st = api.relay.storage
    await st.exports.create("crashed", api.relay.account_id, "email_status",
                            StatusFilter(account_id=api.relay.account_id), NOW - timedelta(days=400))
    got = await st.exports.claim(worker.node, NOW)  # oldest first: this one, as if we crashed running it
    assert got is not None and got.id == "crashed"
    assert await worker.recover() == 1
    t = await st.exports.get("crashed")
    assert t is not None and t.status is ExportStatus.FAILED and t.error == INTERRUPTED
    assert (await api.call("POST", "/v1/exports/crashed/retry", api.a))[0] == 200
    assert (await finished(api, "crashed", api.a))["status"] == "succeeded"


@pytest.mark.parametrize("body, word", [
    ({"status": [7]}, "status"), ({"status": "x"}, "status"), ({"bogus": 1}, "bogus"),
    ({"start_date": "2024-13-01", "end_date": "2024-12-01"}, "start_date"), ({"email_type": "spam"}, "email_type"),
    ({"email": {"a": 1}}, "email"), ({"email_ids": [True]}, "email_ids"), ({"start_date": "2024-01-01"}, "end_date"),
])
async def test_export_bad_bodies(sqlite_api: Api, body: dict[str, Any], word: str) -> None:
    status, resp = await sqlite_api.call("POST", "/v1/exports", sqlite_api.a, json=body)
    assert status == 400 and word in resp["message"], resp


async def test_export_errors_and_operators(sqlite_api: Api) -> None:
    api = sqlite_api
    assert (await api.call("POST", "/v1/exports", api.a, json=[1]))[0] == 400
    assert (await api.call("GET", "/v1/exports/nope", api.a))[0] == 404
    assert (await api.call("GET", "/v1/exports/nope/download", api.a))[0] == 404
    assert (await api.call("POST", "/v1/exports/nope/retry", api.a))[0] == 404
    assert (await api.call("GET", "/v1/exports", api.a, params={"limit": "0"}))[0] == 400
    status, body = await api.call("POST", "/v1/exports", ADMIN)
    assert status == 400 and "account" in body["message"]
    status, task = await api.call("POST", "/v1/exports", ADMIN, params={"account": "beta"})
    assert status == 201
    task = await finished(api, task["id"], ADMIN)
    rows = csv_rows((await download(api, task["id"], ADMIN))[1])
    assert [r["email_id"] for r in rows] == ["01BBB"]
    _, body = await api.call("GET", "/v1/exports", ADMIN)
    assert body["total"] == 1
    assert (await api.call("GET", f"/v1/exports/{task['id']}", api.a))[0] == 404  # beta's, not acme's
    for _ in range(10):  # the operator's exports do not count against acme's budget
        assert (await api.call("POST", "/v1/exports", api.a))[0] == 201
    status, body = await api.call("POST", "/v1/exports", api.a)
    assert status == 429 and "exports per minute" in body["message"]
