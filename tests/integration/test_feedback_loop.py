"""The feedback loop end to end: submit → deliver → the MX's DSN / an ARF report reaches our feedback
listener → status and lists change → the next submission to that address is refused at RCPT."""

from __future__ import annotations

import asyncio
import smtplib

from storage.records import ListKind, LogKind, Status, SubStatus
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until

FB = "fb.relay.test"



async def _relay(factory: RelayFactory, sink: ScriptedMx) -> RelayUnderTest:
    return await factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                          "feedback.listen": "127.0.0.1:0", "feedback.domains": [FB],
                          "feedback.mailboxes": ["fbl"]})



async def _deliver_one(relay: RelayUnderTest, sink: ScriptedMx, rcpt: str) -> tuple[str, str]:
    c = await relay.client()
    _, msg = await c.sendmail("app@acme.example", [rcpt], "Subject: loop\r\nMessage-ID: <loop-1@acme.example>\r\n"
                                                         "\r\nhello\r\n")
    await c.quit()
    email_id = msg.rsplit(" ", 1)[1]

    async def delivered() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return bool(rows) and rows[0].status == Status.DELIVERED

    await wait_until(delivered)
    return email_id, sink.messages[-1].mail_from


def _send(relay: RelayUnderTest, to: str, raw: str) -> None:
    assert relay.feedback_port is not None
    with smtplib.SMTP("127.0.0.1", relay.feedback_port, timeout=10) as s:
        s.sendmail("", [to], raw.replace("\n", "\r\n").encode())


def _dsn(return_path: str, rcpt: str, diag: str = "") -> str:
    diag = diag or f"smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
    return f"""From: MAILER-DAEMON@mx.example.com
To: {return_path}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"

--BOUND
Content-Type: text/plain

This is the mail system at host mx.example.com.
I'm sorry to have to inform you that your message could not be delivered.

--BOUND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: {diag}

--BOUND
Content-Type: text/rfc822-headers

Return-Path: <{return_path}>
From: app@acme.example
To: {rcpt}
Subject: loop
Message-ID: <loop-1@acme.example>

--BOUND--
"""


def _arf(return_path: str, rcpt: str) -> str:
    return f"""From: fbl@isp.example
To: fbl@{FB}
Subject: complaint about message
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="BOUND"

--BOUND
Content-Type: text/plain

This is an email abuse report for an email message received from 127.0.0.1.

--BOUND
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: isp-fbl/1.0
Version: 1
Original-Mail-From: <{return_path}>
Original-Rcpt-To: <{rcpt}>

--BOUND
Content-Type: text/rfc822-headers

Return-Path: <{return_path}>
From: app@acme.example
To: {rcpt}
Subject: loop
Message-ID: <loop-1@acme.example>

--BOUND--
"""


async def _refused_reply(relay: RelayUnderTest, rcpt: str) -> tuple[int, str]:
    c = await relay.client()
    await c.mail("app@acme.example")
    r = await c.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
    await c.quit()
    return r.code, r.message


async def test_dsn_marks_soft_bounce_and_blocks_the_next_send(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    email_id, return_path = await _deliver_one(relay, sink, "gone@example.com")
    assert return_path.endswith(f"@{FB}")
    await asyncio.to_thread(_send, relay, return_path, _dsn(return_path, "gone@example.com"))

    async def bounced() -> bool:
        rows = await relay.storage.statuses.get_message(email_id)
        return rows[0].status == Status.SOFT_BOUNCE

    await wait_until(bounced)
    row = (await relay.storage.statuses.get_message(email_id))[0]
    assert row.sub_status == SubStatus.SB_NOT_EXIST
    assert any(e.kind is LogKind.FEEDBACK and "5.1.1" in e.text for e in row.log)
    entry = (await relay.storage.suppressions.list(relay.account_id, ListKind.BOUNCE, value="gone@example.com")).items
    assert len(entry) == 1 and entry[0].hit_count == 1
    assert await _refused_reply(relay, "gone@example.com") == (550, "5.7.1 Blacklist: Bounce(worker:address in "
                                                                    "bounce list)")
    # The same DSN again changes nothing (hit count stays 1).
    await asyncio.to_thread(_send, relay, return_path, _dsn(return_path, "gone@example.com"))
    await asyncio.sleep(0.5)
    entry = (await relay.storage.suppressions.list(relay.account_id, ListKind.BOUNCE, value="gone@example.com")).items
    assert entry[0].hit_count == 1


async def test_arf_adds_complaint_and_blocks_the_next_send(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    email_id, return_path = await _deliver_one(relay, sink, "angry@example.com")
    await asyncio.to_thread(_send, relay, f"fbl@{FB}", _arf(return_path, "angry@example.com"))

    async def complained() -> bool:
        page = await relay.storage.suppressions.list(relay.account_id, ListKind.COMPLAINT, value="angry@example.com")
        return bool(page.items)

    await wait_until(complained)
    row = (await relay.storage.statuses.get_message(email_id))[0]
    assert any(e.kind is LogKind.FEEDBACK and "complaint" in e.text for e in row.log)
    assert await _refused_reply(relay, "angry@example.com") == (
        550, "5.7.1 Blacklist:complaint (worker:address in complaint list)")


async def test_feedback_listener_is_not_an_open_relay(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    port = relay.feedback_port
    assert port is not None

    def probe() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.ehlo("peer.example")
            s.mail("")
            return [s.rcpt(r) for r in ("victim@elsewhere.example", f"x@sub.{FB}", f'"quoted local"@{FB}',
                                        f"user%other.example@{FB}", f"other.example!user@{FB}", f"{'a' * 65}@{FB}",
                                        f"bounces@{FB}", f"postmaster@{FB.upper()}", f"abuse@{FB}")]

    replies = await asyncio.to_thread(probe)
    assert [code for code, _ in replies] == [550] * 7 + [250, 250]
    assert all(text.startswith(b"5.1.1") for code, text in replies if code == 550)


async def test_forged_return_path_changes_nothing_and_is_quarantined(relay_factory: RelayFactory,
                                                                     sink: ScriptedMx) -> None:
    relay = await _relay(relay_factory, sink)
    email_id, return_path = await _deliver_one(relay, sink, "victim@example.com")
    local, _, domain = return_path.partition("@")
    forged = local[:-4] + ("aaaa" if not local.endswith("aaaa") else "bbbb") + "@" + domain

    def refused_at_rcpt() -> int:
        with smtplib.SMTP("127.0.0.1", relay.feedback_port or 0, timeout=10) as s:
            s.ehlo("peer.example")
            s.mail("")
            return s.rcpt(forged)[0]

    assert await asyncio.to_thread(refused_at_rcpt) == 550  # a forged return path never gets to DATA
    # sent to postmaster@ instead, the bounce naming the forged return path is quarantined
    await asyncio.to_thread(_send, relay, f"postmaster@{domain}", _dsn(forged, "victim@example.com"))
    qdir = relay.cfg.path("feedback") / "quarantine"
    await wait_until(lambda: (any(qdir.glob("*.json"))))
    assert "signature" in next(qdir.glob("*.json")).read_text()
    assert (await relay.storage.statuses.get_message(email_id))[0].status == Status.DELIVERED

