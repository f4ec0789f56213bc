"""`mailrelay feedback ingest`: Maildir, mbox and .eml input; idempotent; junk quarantined."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.cli import main
from storage import open_storage
from storage.records import ListKind, MessageRecord, RecipientOutcome, Status, SubmissionRecord, SubStatus

DSN = """From: MAILER-DAEMON@mx.example.com
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
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown

--B
Content-Type: text/rfc822-headers

From: app@acme.example
To: {rcpt}
Message-ID: {mid}

--B--
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


async def _seed(home: Path) -> None:
    storage = await open_storage(f"sqlite:///{home / 'mailrelay.sqlite3'}")
    try:
        acct = await storage.accounts.ensure_account("acme")
        for i, rcpt in enumerate(("a@example.com", "b@example.com")):
            msg = MessageRecord(f"01INGEST{i:018d}", acct.id, "app1", "app@acme.example", "s", None, None, 10,
                                datetime.now(UTC), "127.0.0.1", "n", message_id=f"<m{i}@acme.example>")
            await storage.statuses.record_submissions([SubmissionRecord(msg, (RecipientOutcome(rcpt,
                                                                                                Status.SENDING),))])
    finally:
        await storage.close()


async def _state(home: Path) -> tuple[list[tuple[Status, SubStatus | None]], int]:
    storage = await open_storage(f"sqlite:///{home / 'mailrelay.sqlite3'}")
    try:
        rows = [(await storage.statuses.get_message(f"01INGEST{i:018d}"))[0] for i in range(2)]
        acct = await storage.accounts.get_account("acme")
        assert acct is not None
        bounces = (await storage.suppressions.list(acct.id, ListKind.BOUNCE)).items
        return [(r.status, r.sub_status) for r in rows], sum(b.hit_count for b in bounces)
    finally:
        await storage.close()


def test_ingest_maildir_mbox_and_eml_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert _run(capsys, "init", "--home", str(home), "--no-delivery")[0] == 0
    asyncio.run(_seed(home))
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.eml").write_text(DSN.format(rcpt="a@example.com", mid="<m0@acme.example>"))
    mbox = tmp_path / "bounces.mbox"
    mbox.write_text("From MAILER-DAEMON Thu Nov 26 10:00:00 2026\n"
                    + DSN.format(rcpt="b@example.com", mid="<m1@acme.example>")
                    + "\nFrom someone Thu Nov 26 10:00:01 2026\nSubject: hello\n\njust a note\n")
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b"\x00\x01binary junk\xff" * 50)

    rc, out, _ = _run(capsys, "feedback", "ingest", "--home", str(home), "--no-progress", str(maildir), str(mbox),
                      str(junk))
    assert rc == 0
    assert "read 4 messages: 2 applied, 0 already seen" in out and "2 quarantined" in out
    statuses, hits = asyncio.run(_state(home))
    assert statuses == [(Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST)] * 2 and hits == 2

    rc, out, _ = _run(capsys, "feedback", "ingest", "--home", str(home), "--no-progress", str(maildir), str(mbox))
    assert rc == 0 and "0 applied, 2 already seen" in out
    assert asyncio.run(_state(home))[1] == 2  # counted once
    quarantine = home / "feedback" / "quarantine"
    assert len(list(quarantine.glob("*.eml"))) == 2 and len(list(quarantine.glob("*.json"))) == 2
