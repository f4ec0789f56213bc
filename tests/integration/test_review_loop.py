"""The review loop end to end, on SQLite and PostgreSQL: a scripted MX (aiosmtpd on loopback)
answers replies no phrase rule knows; they show up in `mailrelay rules unclassified` and
GET /v1/rules/unclassified; `rules add` gives them a category; `rules reapply --since` changes the
records' sub-status and puts / removes the bounce-list entry as the rule says; a second run changes
nothing; a reload (SIGHUP) makes delivery classify the next such reply with the site rule."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from relay.cli import main
from storage import open_storage
from storage.records import ListKind, MessageRecord, RecipientOutcome, Status, SubmissionRecord, SubStatus
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until

ADMIN_TOKEN = "admin-token-0123456789abcdef"
FROZEN = "550 5.2.0 <{rcpt}> account zq-frozen by owner ref {n}"
PARKED = "550 5.1.1 <{rcpt}> zq-gateway: mailbox parked id {n}"
FROZEN_TEXT = "550 5.2.0 <addr> account zq-frozen by owner ref #"
PARKED_TEXT = "550 5.1.1 <addr> zq-gateway: mailbox parked id #"


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = await asyncio.to_thread(main, list(argv))  # the CLI runs its own event loop
    out, err = capsys.readouterr()
    return rc, out, err


def _reply(stage: str, rcpt: str) -> str | None:
    if stage != "RCPT":
        return None
    n = sum(map(ord, rcpt))  # a number that differs per recipient: normalised to '#'
    if rcpt.startswith("frozen"):
        return FROZEN.format(rcpt=rcpt, n=n)
    if rcpt.startswith("parked"):
        return PARKED.format(rcpt=rcpt, n=n)
    return None


async def _send(relay: RelayUnderTest, *rcpts: str) -> str:
    c = await relay.client()
    _, msg = await c.sendmail("app@acme.example", list(rcpts), "Subject: r\r\n\r\nx\r\n")
    await c.quit()
    email_id = msg.rsplit(" ", 1)[1]

    async def failed() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return len(rows) == len(rcpts) and all(r.status is Status.INVALID for r in rows)

    await wait_until(failed, timeout=20)
    return email_id


async def _row(relay: RelayUnderTest, email_id: str, rcpt: str) -> tuple[Status, SubStatus | None]:
    rows = {r.recipient: r for r in await relay.storage.statuses.get_message(email_id)}
    return rows[rcpt].status, rows[rcpt].sub_status


async def _bounced(relay: RelayUnderTest, rcpt: str) -> bool:
    page = await relay.storage.suppressions.list(relay.account_id, ListKind.BOUNCE, value=rcpt)
    return page.total > 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_unknown_reply_listed_ruled_and_reapplied(backend: str, relay_factory: RelayFactory,
                                                        sink: ScriptedMx, capsys: pytest.CaptureFixture[str]) -> None:
    relay = await relay_factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                                 "delivery.ehlo_name": "relay.test", "http.listen": "127.0.0.1:0",
                                 "http.admin_token": ADMIN_TOKEN}, backend=backend)
    home = str(relay.home)
    sink.set(hook=_reply)
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")
    first = await _send(relay, "frozen1@example.com", "parked1@example.com")
    second = await _send(relay, "frozen2@example.com")
    # as delivery decided them: the fallbacks (5.2.0: others 409; 5.1.1: not exist 406 + bounce list)
    assert await _row(relay, first, "frozen1@example.com") == (Status.INVALID, SubStatus.OTHERS)
    assert await _row(relay, first, "parked1@example.com") == (Status.INVALID, SubStatus.NOT_EXIST)
    assert await _bounced(relay, "parked1@example.com")
    assert not await _bounced(relay, "frozen1@example.com")

    # the review loop kept them, written in a batch a moment later
    async def listed() -> bool:
        return sum(r.count for r in await relay.storage.unclassified.list()) == 3

    await wait_until(listed)
    rc, out, err = await cli(capsys, "rules", "unclassified", "--home", home, "--json")
    assert rc == 0, err
    rows = {r["text"]: r for r in json.loads(out)}
    assert set(rows) == {FROZEN_TEXT, PARKED_TEXT}
    frozen = rows[FROZEN_TEXT]
    assert (frozen["source"], frozen["count"], frozen["rule"]) == ("delivery", 2, "status-mailbox")
    assert sorted(frozen["email_ids"]) == sorted([first, second])
    assert frozen["first_seen"] <= frozen["last_seen"]
    assert rows[PARKED_TEXT]["count"] == 1 and rows[PARKED_TEXT]["email_ids"] == [first]
    rc, out, _ = await cli(capsys, "rules", "unclassified", "--home", home)
    assert rc == 0 and FROZEN_TEXT in out and "      2 delivery" in out

    # the same list over HTTP, for operators only
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    url = f"http://{host}:{port}/v1/rules/unclassified"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["count"] == 2 and body["result"][0]["text"] == FROZEN_TEXT
        assert body["result"][0]["count"] == 2
        basic = base64.b64encode(f"{relay.api_user}:{relay.key}".encode()).decode()
        async with http.get(url, headers={"Authorization": f"Basic {basic}"}) as resp:
            assert resp.status == 403
        async with http.get(url, params={"source": "nope"},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            assert resp.status == 400

    # bad rules are refused and write nothing
    rc, _, err = await cli(capsys, "rules", "add", "--home", home, "--match", FROZEN_TEXT, "--category", "frozen")
    assert rc == 1 and "--category: 'frozen' is not one of" in err
    rc, _, err = await cli(capsys, "rules", "add", "--home", home, "--match", FROZEN_TEXT, "--category",
                           "not_exist", "--status", "delivered")
    assert rc == 1 and "--status" in err
    assert not (relay.home / "site_rules.toml").exists()

    # the operator's verdicts: a frozen account does not exist; a parked mailbox is no missing one
    rc, out, err = await cli(capsys, "rules", "add", "--home", home, "--match", FROZEN_TEXT,
                             "--category", "not_exist", "--status", "invalid")
    assert rc == 0 and "added site-1" in out, err
    rc, out, err = await cli(capsys, "rules", "add", "--home", home, "--match", "mailbox parked",
                             "--category", "others")
    assert rc == 0 and "added site-2" in out, err
    rc, out, _ = await cli(capsys, "rules", "list", "--home", home, "--json")
    listed_rules = json.loads(out)
    assert [(r["origin"], r["name"], r["category"]) for r in listed_rules[:2]] == [
        ("site", "site-1", "not_exist"), ("site", "site-2", "others")]
    assert any(r["origin"] == "reply" for r in listed_rules) and any(r["origin"] == "bounce" for r in listed_rules)

    rc, out, err = await cli(capsys, "rules", "reapply", "--home", home, "--since", since, "--json")
    assert rc == 0, err
    report = json.loads(out)
    changes = {c["recipient"]: c for c in report["changes"]}
    assert report["examined"] == 3 and report["changed"] == 3
    assert changes["frozen1@example.com"] == {
        "email_id": first, "recipient": "frozen1@example.com", "source": "delivery", "rule": "site-1",
        "status_before": 4, "sub_status_before": 409, "status": 4, "sub_status": 406, "bounce_list": "added"}
    assert changes["frozen2@example.com"]["bounce_list"] == "added"
    assert changes["parked1@example.com"] == {
        "email_id": first, "recipient": "parked1@example.com", "source": "delivery", "rule": "site-2",
        "status_before": 4, "sub_status_before": 406, "status": 4, "sub_status": 409, "bounce_list": "removed"}
    assert sorted(r["text"] for r in report["resolved"]) == sorted([FROZEN_TEXT, PARKED_TEXT])
    assert await _row(relay, first, "frozen1@example.com") == (Status.INVALID, SubStatus.NOT_EXIST)
    assert await _row(relay, second, "frozen2@example.com") == (Status.INVALID, SubStatus.NOT_EXIST)
    assert await _row(relay, first, "parked1@example.com") == (Status.INVALID, SubStatus.OTHERS)
    assert await _bounced(relay, "frozen1@example.com") and await _bounced(relay, "frozen2@example.com")
    assert not await _bounced(relay, "parked1@example.com")
    assert await relay.storage.unclassified.list() == []  # the rules cover them now

    # idempotent
    rc, out, _ = await cli(capsys, "rules", "reapply", "--home", home, "--since", since)
    assert rc == 0 and out.strip().endswith("3 records decided by a fallback or site rule since "
                                            f"{datetime.fromisoformat(since).isoformat()}: 0 changed; "
                                            "0 unclassified texts now covered by a rule")

    # a reload gives the running delivery the site rules: the next frozen reply is "not exist" at once
    await relay.app.reload()
    third = await _send(relay, "frozen3@example.com")
    assert await _row(relay, third, "frozen3@example.com") == (Status.INVALID, SubStatus.NOT_EXIST)
    assert await _bounced(relay, "frozen3@example.com")
    rows3 = await relay.storage.statuses.get_message(third)
    assert rows3[0].log[-1].rule == "site-1"


BOUNCE = """From: MAILER-DAEMON@mx.example.com
To: bounces@fb.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.0.0
Diagnostic-Code: smtp; 550 5.0.0 <{rcpt}>: zq-archive: mailbox migrated to cold storage {n}

--B
Content-Type: text/rfc822-headers

From: app@acme.example
To: {rcpt}
Message-ID: {mid}

--B--
"""


@pytest.fixture
def home(tmp_path: Path, storage_url: str) -> Path:
    h = tmp_path / "home"
    assert main(["init", "--home", str(h), "--no-delivery", "--storage-url", storage_url]) == 0
    return h


async def test_bounce_fallbacks_listed_ruled_and_reapplied(home: Path, storage_url: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The same loop for feedback (SQLite and PostgreSQL): bounces whose diagnostic fell to a
    fallback are kept with source "feedback"; a site rule and reapply turn 509 into 506 and put the
    addresses on the bounce list."""
    capsys.readouterr()
    storage = await open_storage(storage_url)
    try:
        acct = await storage.accounts.ensure_account("acme")
        for i in range(2):
            msg = MessageRecord(f"01REVIEW{i:018d}", acct.id, "app1", "app@acme.example", "s", None, None, 10,
                                datetime.now(UTC), "127.0.0.1", "n", message_id=f"<r{i}@acme.example>")
            await storage.statuses.record_submissions([SubmissionRecord(msg, (
                RecipientOutcome(f"cold{i}@example.com", Status.SENDING),))])
    finally:
        await storage.close()
    for i in range(2):
        (home / f"b{i}.eml").write_text(BOUNCE.format(rcpt=f"cold{i}@example.com", n=7000 + i,
                                                      mid=f"<r{i}@acme.example>"))
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")
    rc, out, err = await cli(capsys, "feedback", "ingest", "--home", str(home), "--no-progress",
                             str(home / "b0.eml"), str(home / "b1.eml"))
    assert rc == 0 and "2 applied" in out, out + err

    rc, out, err = await cli(capsys, "rules", "unclassified", "--home", str(home), "--json", "--source", "feedback")
    assert rc == 0, err
    [row] = json.loads(out)
    assert row["text"] == "550 5.0.0 <addr> zq-archive: mailbox migrated to cold storage #"
    assert (row["source"], row["count"], row["rule"]) == ("feedback", 2, "bounce-status-undefined")
    assert sorted(row["email_ids"]) == [f"01REVIEW{i:018d}" for i in range(2)]

    rc, out, err = await cli(capsys, "rules", "add", "--home", str(home), "--match", "mailbox migrated to cold storage",
                             "--category", "not_exist")
    assert rc == 0, err
    rc, out, err = await cli(capsys, "rules", "reapply", "--home", str(home), "--since", since, "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert [(c["source"], c["status_before"], c["sub_status_before"], c["status"], c["sub_status"],
             c["bounce_list"], c["rule"]) for c in report["changes"]] == [
        ("feedback", 5, 509, 5, 506, "added", "site-1")] * 2
    storage = await open_storage(storage_url)
    try:
        for i in range(2):
            [rec] = await storage.statuses.get_message(f"01REVIEW{i:018d}")
            assert (rec.status, rec.sub_status) == (Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST)
        bounced = await storage.suppressions.list(acct.id, ListKind.BOUNCE)
        assert sorted(e.value for e in bounced.items) == ["cold0@example.com", "cold1@example.com"]
        assert await storage.unclassified.list() == []
    finally:
        await storage.close()
    rc, out, _ = await cli(capsys, "rules", "reapply", "--home", str(home), "--since", since, "--json")
    assert rc == 0 and json.loads(out)["changed"] == 0 and json.loads(out)["examined"] == 2
