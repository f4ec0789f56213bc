"""The submission path end to end, over real sockets: AUTH, suppression replies, spool, status rows."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import subprocess
from datetime import timedelta

import aiosmtplib
import pytest

from storage.records import (
    ALL_API_USERS,
    EmailType,
    ListKind,
    Status,
    StatusFilter,
    SubStatus,
    SuppressionEntry,
    utcnow,
)
from tests.integration.relay_fixture import RelayUnderTest, wait_until

MSG = (b"From: app@acme.example\r\nTo: someone@example.com\r\nSubject: Hello there\r\n"
       b"X-Label: spring-sale\r\nX-Email-Type: marketing\r\n\r\nHi!\r\n.leading dot\r\n")


async def _send(c: aiosmtplib.SMTP, rcpts: list[str], body: bytes = MSG) -> tuple[list[tuple[int, str]], int, str]:
    """MAIL, RCPT each, DATA; returns ([(code, text) per RCPT], data code, data text)."""
    r = await c.mail("app@acme.example")
    assert r.code == 250, r
    replies = []
    for rcpt in rcpts:
        rr = await c.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
        replies.append((rr.code, rr.message))
    if not any(code == 250 for code, _ in replies):
        await c.rset()
        return replies, 0, ""
    d = await c.data(body)
    return replies, d.code, d.message


async def _status(relay: RelayUnderTest, recipient: str) -> list:  # type: ignore[type-arg]
    assert relay.app.intake is not None
    await relay.app.intake.flush()  # rows are written right after the 250
    page = await relay.storage.statuses.search(StatusFilter(account_id=relay.account_id, recipient=recipient))
    return page.items


async def test_accepted_message_is_spooled_and_recorded(relay: RelayUnderTest) -> None:
    c = await relay.client()
    replies, code, text = await _send(c, ["someone@example.com", "Other@Example.COM"])
    await c.quit()
    assert [r[0] for r in replies] == [250, 250]
    assert code == 250 and text.startswith("2.0.0 Ok: queued as ")
    email_id = text.rsplit(" ", 1)[1]
    assert relay.app.spool is not None
    content = await relay.app.spool.read_content(email_id)
    assert b"X-Label" not in content and b"X-Email-Type" not in content
    assert content.endswith(b"Hi!\r\n.leading dot\r\n")  # dot-unstuffed on the way in
    rows = await _status(relay, "someone@example.com")
    assert len(rows) == 1
    row = rows[0]
    assert row.email_id == email_id and row.status == Status.SENDING and row.sub_status is None
    assert row.subject == "Hello there" and row.label == "spring-sale" and row.email_type == EmailType.MARKETING
    assert row.request_ip == "127.0.0.1" and row.api_user == "app1" and row.domain == "example.com"
    assert row.log and row.log[0].kind.value == "accepted"
    assert (await _status(relay, "other@example.com"))[0].recipient.lower() == "other@example.com"


async def test_auth_failure_and_relay_without_auth(relay: RelayUnderTest) -> None:
    c = await relay.client(login=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as ei:
        await c.login("app1", "wrong-key")
    assert ei.value.code == 535
    r = await c.execute_command(b"MAIL", b"FROM:<app@acme.example>")
    assert r.code == 530 and "Authentication required" in r.message
    await c.quit()
    c = await relay.client(login=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await c.login("nobody", "whatever-key")
    await c.quit()


async def test_too_many_auth_failures_close_the_connection(relay: RelayUnderTest) -> None:
    c = await relay.client(login=False)
    bad = base64.b64encode(b"\0app1\0wrong-key").decode()
    codes = [(await c.execute_command(b"AUTH", b"PLAIN", bad.encode())).code for _ in range(3)]
    assert codes == [535, 535, 421]
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await c.noop()


@pytest.mark.parametrize(
    ("kind", "value", "expected_reason"),
    [
        (ListKind.COMPLAINT, "victim@example.com", "Blacklist:complaint (worker:address in complaint list)"),
        (ListKind.BLOCK, "victim@example.com", "Blacklist: Block:(worker:address in block list)"),
        (ListKind.BLOCK, "example.com", "Blacklist: Block:(worker:address in block list)"),
        (ListKind.BOUNCE, "victim@example.com", "Blacklist: Bounce(worker:address in bounce list)"),
        (ListKind.UNSUBSCRIBE, "victim@example.com", "unsubscribe"),
    ],
)
async def test_each_list_refuses_with_its_exact_reason(
    any_backend_relay: RelayUnderTest, kind: ListKind, value: str, expected_reason: str
) -> None:
    relay = any_backend_relay
    now = utcnow()
    await relay.storage.suppressions.add([SuppressionEntry(
        account_id=relay.account_id, kind=kind, value=value, created_at=now,
        expires_at=now + timedelta(days=30) if kind in (ListKind.BOUNCE, ListKind.COMPLAINT) else None,
        reason_code=0 if kind is ListKind.UNSUBSCRIBE else None)])
    c = await relay.client()
    replies, code, _ = await _send(c, ["victim@example.com", "fine@other.example"])
    await c.quit()
    assert replies[0][0] == 550 and replies[0][1] == f"5.7.1 {expected_reason}"
    assert replies[1][0] == 250 and code == 250
    rows = await _status(relay, "victim@example.com")
    assert len(rows) == 1
    want_sub = SubStatus.UNSUBSCRIBE if kind is ListKind.UNSUBSCRIBE else SubStatus.BLACKLIST
    assert rows[0].status == Status.INVALID and rows[0].sub_status == want_sub
    assert rows[0].reason == expected_reason
    assert rows[0].subject == "Hello there" and rows[0].request_ip == "127.0.0.1"


async def test_no_interception_overrides_every_list(any_backend_relay: RelayUnderTest) -> None:
    relay = any_backend_relay
    now = utcnow()
    entries = [SuppressionEntry(account_id=relay.account_id, kind=k, value="vip@example.com", created_at=now,
                                expires_at=now + timedelta(days=30))
               for k in (ListKind.COMPLAINT, ListKind.BLOCK, ListKind.BOUNCE, ListKind.UNSUBSCRIBE)]
    entries.append(SuppressionEntry(account_id=relay.account_id, kind=ListKind.NO_INTERCEPTION, value="example.com",
                                    created_at=now))
    await relay.storage.suppressions.add(entries)
    c = await relay.client()
    replies, code, _ = await _send(c, ["vip@example.com"])
    await c.quit()
    assert replies == [(250, "2.1.5 Ok")] and code == 250
    assert (await _status(relay, "vip@example.com"))[0].status == Status.SENDING


async def test_expired_bounce_entry_no_longer_refuses(relay: RelayUnderTest) -> None:
    past = utcnow() - timedelta(days=40)
    await relay.storage.suppressions.add([SuppressionEntry(
        account_id=relay.account_id, kind=ListKind.BOUNCE, value="old@example.com", created_at=past,
        expires_at=past + timedelta(days=30))])
    c = await relay.client()
    replies, code, _ = await _send(c, ["old@example.com"])
    await c.quit()
    assert replies[0][0] == 250 and code == 250


async def test_block_scoped_to_another_api_user_does_not_apply(relay: RelayUnderTest) -> None:
    await relay.add_user("app2", "second-key-123456")
    await relay.storage.suppressions.add([SuppressionEntry(
        account_id=relay.account_id, kind=ListKind.BLOCK, value="x@example.com", api_user="app2")])
    c = await relay.client()
    replies, _, _ = await _send(c, ["x@example.com"])
    await c.quit()
    assert replies[0][0] == 250
    c = await relay.client(user="app2", key="second-key-123456")
    replies, _, _ = await _send(c, ["x@example.com"])
    await c.quit()
    assert replies[0] == (550, "5.7.1 Blacklist: Block:(worker:address in block list)")
    assert ALL_API_USERS == "all"


async def test_format_error_and_refused_only_transaction_is_recorded(relay: RelayUnderTest) -> None:
    c = await relay.client()
    await c.mail("app@acme.example")
    long_local = "a" * 65
    r = await c.execute_command(b"RCPT", f"TO:<{long_local}@example.com>".encode())
    assert r.code == 553 and r.message.startswith("5.1.3 Format Error")
    r = await c.execute_command(b"DATA")
    assert r.code in (503, 554)
    await c.rset()
    await c.quit()
    await asyncio.sleep(0.05)
    rows = await _status(relay, f"{long_local}@example.com")
    assert len(rows) == 1 and rows[0].sub_status == SubStatus.FORMAT_ERROR
    assert rows[0].reason.startswith("Format Error")


@pytest.mark.parametrize("rcpt, detail", [
    ("bad address@example.com", "space"), ("bad@@example.com", "@"), ("a..b@example.com", ""),
])
async def test_malformed_recipients_are_format_errors_with_a_record(relay: RelayUnderTest, rcpt: str,
                                                                    detail: str) -> None:
    c = await relay.client()
    await c.mail("app@acme.example")
    r = await c.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
    assert r.code == 553 and r.message.startswith("5.1.3 Format Error") and detail in r.message, r
    ok = await c.execute_command(b"RCPT", b"TO:<fine@example.com>")
    assert ok.code == 250
    await c.rset()
    await c.quit()
    await wait_until(lambda: _status(relay, rcpt))
    rows = await _status(relay, rcpt)
    assert len(rows) == 1 and rows[0].status == Status.INVALID and rows[0].sub_status == SubStatus.FORMAT_ERROR


async def test_size_and_recipient_limits(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = await relay_factory({"limits.max_recipients": 100, "limits.max_message_size": 65536})
    c = await relay.client()
    await c.mail("app@acme.example")
    codes = []
    for i in range(101):
        codes.append((await c.execute_command(b"RCPT", f"TO:<r{i}@example.com>".encode())).code)
    assert codes[:100] == [250] * 100 and codes[100] == 452
    await c.rset()
    r = await c.execute_command(b"MAIL", b"FROM:<app@acme.example> SIZE=99999999")
    assert r.code == 552
    await c.mail("app@acme.example")
    await c.rcpt("big@example.com")
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 70
    with pytest.raises(aiosmtplib.SMTPDataError) as ei:
        await c.data(big)
    assert ei.value.code == 552
    await c.quit()
    assert await _status(relay, "big@example.com") == []


async def test_starttls_and_implicit_tls(tls_relay: RelayUnderTest) -> None:
    relay = tls_relay
    c = await relay.client(login=False)
    r = await c.execute_command(b"AUTH", b"PLAIN", b"AGFwcDEAeA==")
    assert r.code == 538  # not before TLS on this listener
    await c.starttls(tls_context=relay.client_tls_context())
    await c.login(relay.api_user, relay.key)
    _, code, _ = await _send(c, ["tls@example.com"])
    await c.quit()
    assert code == 250
    c = await relay.client(implicit_tls=True)
    _, code, _ = await _send(c, ["implicit@example.com"])
    await c.quit()
    assert code == 250


async def test_rate_limit_per_api_user(relay_factory) -> None:  # type: ignore[no-untyped-def]
    relay = await relay_factory({"limits.messages_per_second": 1.0, "limits.messages_burst": 2})
    c = await relay.client()
    codes = []
    for _ in range(3):
        r = await c.execute_command(b"MAIL", b"FROM:<app@acme.example>")
        codes.append(r.code)
        await c.rset()
    await c.quit()
    assert codes[:2] == [250, 250] and codes[2] == 451


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by scripts/system-deps.sh")
async def test_swaks_interop(relay: RelayUnderTest) -> None:
    proc = await asyncio.to_thread(
        subprocess.run,
        ["swaks", "--server", f"127.0.0.1:{relay.port}", "--auth", "PLAIN", "--auth-user", relay.api_user,
         "--auth-password", relay.key, "--from", "app@acme.example", "--to", "swaks@example.com",
         "--header", "X-Label: via-swaks", "--pipeline", "--timeout", "20"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "250 2.0.0 Ok: queued as" in proc.stdout
    assert "AUTH PLAIN" in proc.stdout
    rows = await _status(relay, "swaks@example.com")
    assert rows and rows[0].label == "via-swaks"


async def test_auth_payload_is_never_logged(relay: RelayUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    payload = base64.b64encode(f"\0{relay.api_user}\0{relay.key}".encode()).decode()
    with caplog.at_level(logging.DEBUG):
        c = await relay.client(login=False)
        assert (await c.execute_command(b"AUTH", b"PLAIN", payload.encode())).code == 235
        r = await c.execute_command(b"AUTH", b"LOGIN")
        assert r.code == 503  # already authenticated
        await c.quit()
        c = await relay.client(login=False)
        await c.execute_command(b"AUTH", b"LOGIN")
        await c.execute_command(base64.b64encode(relay.api_user.encode()))
        await c.execute_command(base64.b64encode(b"not-the-key-secret"))
        await c.quit()
    text = "\n".join(r.getMessage() + " " + str(r.__dict__) for r in caplog.records)
    assert caplog.records, "expected some log records at DEBUG"
    for secret in (payload, relay.key, "not-the-key-secret", base64.b64encode(b"not-the-key-secret").decode()):
        assert secret not in text


async def test_lookup_outage_answers_451_with_one_traceback(relay: RelayUnderTest, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A database outage fails every RCPT: each gets 451, the log one traceback and short lines after it."""
    from policies.chain import PolicyChain

    async def down(self: PolicyChain, ctx: object) -> None:
        raise ConnectionError("database is down")

    monkeypatch.setattr(PolicyChain, "check", down)
    c = await relay.client()
    with caplog.at_level(logging.WARNING):
        replies, _, _ = await _send(c, [f"r{i}@example.com" for i in range(5)])
    await c.quit()
    assert [code for code, _ in replies] == [451] * 5
    assert all("4.3.0" in text for _, text in replies)
    failures = [r for r in caplog.records if getattr(r, "event", None) == "rcpt_lookup_failed"]
    assert len(failures) == 5
    assert sum(r.exc_info is not None for r in failures) == 1
