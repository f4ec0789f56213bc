"""relay.delivery.client against real aiosmtpd servers (ScriptedMx) over loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from relay.delivery.client import ClientOptions, SmtpConnection, open_connection
from relay.rules.types import AttemptResult, Stage
from tests.helpers.mx_sink import ScriptedMx

OPTS = ClientOptions(ehlo_name="relay.test", connect_timeout=2.0, command_timeout=2.0, data_timeout=2.0)
MSG = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n"

MxFactory = Callable[..., Awaitable[ScriptedMx]]


@pytest.fixture
async def mx_factory() -> AsyncIterator[MxFactory]:
    started: list[ScriptedMx] = []

    async def make(host: str = "127.0.0.2", port: int = 0, **script: Any) -> ScriptedMx:
        mx = await ScriptedMx(host, port, **script).start()
        started.append(mx)
        return mx

    yield make
    for mx in started:
        await mx.stop()


@pytest.fixture
async def conns() -> AsyncIterator[list[SmtpConnection]]:
    opened: list[SmtpConnection] = []
    yield opened
    for c in opened:
        await c.close()


async def connect(mx: ScriptedMx, conns: list[SmtpConnection], opts: ClientOptions = OPTS) -> SmtpConnection:
    c = await open_connection(mx.hostname, mx.host, mx.port, opts)
    assert isinstance(c, SmtpConnection), c
    conns.append(c)
    return c


async def opened_fails(mx: ScriptedMx, opts: ClientOptions = OPTS) -> AttemptResult:
    r = await open_connection(mx.hostname, mx.host, mx.port, opts)
    assert isinstance(r, AttemptResult), r
    return r


# -- delivered ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
async def test_delivered_exact_bytes(mx_factory: MxFactory, conns: list[SmtpConnection], pipelining: bool) -> None:
    mx = await mx_factory(pipelining=pipelining)
    opts = ClientOptions(ehlo_name="relay.test", source_ip="127.0.0.1", command_timeout=2.0)
    c = await connect(mx, conns, opts)
    assert ("PIPELINING" in c.extensions) is pipelining
    content = b"Subject: dots\n\n.\n..two\n.x\rlast line"
    r = await c.deliver("bounce+x@relay.test", "b@example.com", content)
    assert r.delivered, r
    assert (r.stage, r.code, r.enhanced) == (Stage.DOT, 250, "2.0.0")
    assert r.text == "Ok: queued as 1"
    assert r.reply_line() == "250 2.0.0 Ok: queued as 1"
    assert (r.mx_host, r.mx_ip, r.local_ip, r.tls) == (mx.hostname, "127.0.0.2", "127.0.0.1", False)
    assert r.duration_ms >= 0
    [m] = mx.messages
    assert (m.mail_from, m.rcpt, m.rcpts) == ("bounce+x@relay.test", "b@example.com", ("b@example.com",))
    # CRLF everywhere, dot-stuffing undone by the server, a line end added at the end
    assert m.content == b"Subject: dots\r\n\r\n.\r\n..two\r\n.x\r\nlast line\r\n"
    assert m.peer is not None and m.peer[0] == "127.0.0.1"
    assert any(o.startswith("SIZE=") for o in m.mail_options)
    assert c.usable and c.messages_sent == 1


async def test_size_and_8bitmime(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory()
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "b@example.com", b"Subject: caf\xc3\xa9\r\n\r\nx\r\n", size=1234)
    assert r.delivered, r
    assert mx.messages[0].mail_options == ("SIZE=1234", "BODY=8BITMIME")


async def test_ehlo_refused_falls_back_to_helo(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(ehlo="502 5.5.1 EHLO not implemented")
    c = await connect(mx, conns)
    assert c.extensions == {}
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert r.delivered, r
    assert [x.split()[0] for x in mx.commands[:2]] == ["EHLO", "HELO"]
    assert not any(" SIZE=" in x for x in mx.commands)  # no ESMTP parameters to a HELO server


# -- refusals as data ---------------------------------------------------------------------------


async def test_rcpt_user_unknown_then_reuse(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(rcpt="550 5.1.1 <nobody@example.com>: user unknown", rcpt_only={"nobody@example.com"})
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "nobody@example.com", MSG)
    assert (r.stage, r.code, r.enhanced) == (Stage.RCPT, 550, "5.1.1")
    assert r.text == "<nobody@example.com>: user unknown"
    assert not r.delivered
    assert "RSET" in mx.commands
    assert c.usable
    ok = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert ok.delivered, ok
    assert len(mx.connections) == 1 and len(mx.messages) == 1


async def test_mail_refused_pipelined(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(mail="553 5.7.1 sender rejected")
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert (r.stage, r.code, r.enhanced, r.text) == (Stage.MAIL, 553, "5.7.1", "sender rejected")
    assert c.usable
    mx.set(mail=None)
    assert (await c.deliver("a@relay.test", "b@example.com", MSG)).delivered


async def test_multiline_reply_joined(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(rcpt="550-5.1.1 The email account that you tried to reach does not exist.\n"
                               "550-5.1.1 Please try double-checking the recipient's email\n"
                               "550 5.1.1 address. x1si123 - gsmtp")
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert (r.stage, r.code, r.enhanced) == (Stage.RCPT, 550, "5.1.1")
    assert r.text == ("The email account that you tried to reach does not exist. / "
                      "Please try double-checking the recipient's email / address. x1si123 - gsmtp")


async def test_greeting_421(mx_factory: MxFactory) -> None:
    mx = await mx_factory(greeting="421 4.7.0 try later")
    r = await opened_fails(mx)
    assert (r.stage, r.code, r.enhanced, r.text) == (Stage.GREETING, 421, "4.7.0", "try later")
    assert (r.mx_host, r.mx_ip) == (mx.hostname, mx.host)
    assert mx.commands == []


@pytest.mark.parametrize(
    ("reply", "code", "enhanced", "text"),
    [
        ("451 4.7.1 rate limited", 451, "4.7.1", "rate limited"),
        ("554 5.7.1 spam", 554, "5.7.1", "spam"),
        ("550 no enhanced code here", 550, None, "no enhanced code here"),
    ],
)
async def test_refused_at_dot(mx_factory: MxFactory, conns: list[SmtpConnection], reply: str, code: int,
                              enhanced: str | None, text: str) -> None:
    mx = await mx_factory(data_reply=reply)
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert (r.stage, r.code, r.enhanced, r.text) == (Stage.DOT, code, enhanced, text)
    assert not r.delivered
    assert c.usable and mx.messages == []
    mx.set(data_reply=None)
    assert (await c.deliver("a@relay.test", "b@example.com", MSG)).delivered


async def test_data_command_refused(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(data="554 5.5.1 no valid recipients", pipelining=False)
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert (r.stage, r.code, r.enhanced) == (Stage.DATA, 554, "5.5.1")
    assert c.usable


async def test_pipelined_data_accepted_after_refused_rcpt(mx_factory: MxFactory,
                                                           conns: list[SmtpConnection]) -> None:
    """RFC 2920: a server that says 354 although RCPT failed gets an empty message, then RSET."""
    mx = await mx_factory(rcpt="550 5.1.1 unknown", data="354 go ahead")
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert (r.stage, r.code, r.enhanced) == (Stage.RCPT, 550, "5.1.1")
    assert c.usable and mx.commands[-2:] == [".", "RSET"]
    mx.set(rcpt=None, data=None)
    assert (await c.deliver("a@relay.test", "b@example.com", MSG)).delivered


async def test_hook_computes_replies(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory()
    mx.set(hook=lambda stage, arg: "451 4.7.1 slow down" if stage == "DOT" and len(mx.messages) >= 2 else None)
    c = await connect(mx, conns)
    results = [await c.deliver("a@relay.test", f"r{i}@example.com", MSG) for i in range(3)]
    assert [(r.stage, r.code) for r in results] == [(Stage.DOT, 250), (Stage.DOT, 250), (Stage.DOT, 451)]


# -- failures without a reply -------------------------------------------------------------------


@pytest.mark.parametrize(("at", "stage"), [("RCPT", Stage.RCPT), ("DOT", Stage.DOT)])
async def test_slow_reply_times_out(mx_factory: MxFactory, conns: list[SmtpConnection], at: str,
                                    stage: Stage) -> None:
    mx = await mx_factory(delay=1.5, delay_on={at})
    opts = ClientOptions(ehlo_name="relay.test", command_timeout=0.3, data_timeout=0.3)
    c = await connect(mx, conns, opts)
    t0 = time.monotonic()
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert time.monotonic() - t0 < 1.2
    assert (r.stage, r.code, r.enhanced) == (stage, None, None)
    assert r.text.startswith("timeout during "), r.text
    assert not c.usable


async def test_slow_greeting_times_out(mx_factory: MxFactory) -> None:
    mx = await mx_factory(delay=1.5, delay_on={"GREETING"})
    r = await opened_fails(mx, ClientOptions(ehlo_name="relay.test", command_timeout=0.3))
    assert (r.stage, r.code) == (Stage.GREETING, None)
    assert "timeout" in r.text


@pytest.mark.parametrize(("at", "stage"), [("DATA", Stage.DATA), ("DOT", Stage.DOT), ("RCPT", Stage.RCPT)])
async def test_connection_dropped(mx_factory: MxFactory, conns: list[SmtpConnection], at: str, stage: Stage) -> None:
    mx = await mx_factory(drop_at=at)
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert (r.stage, r.code, r.enhanced) == (stage, None, None)
    assert r.text.startswith("connection lost during ")
    if at != "RCPT":
        assert "DATA" in r.text
    assert not c.usable
    again = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert (again.stage, again.code) == (Stage.MAIL, None)
    assert mx.messages == []


async def test_connect_refused() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    r = await open_connection("mx.example.com", "127.0.0.2", port, OPTS)
    assert isinstance(r, AttemptResult)
    assert (r.stage, r.code, r.enhanced) == (Stage.CONNECT, None, None)
    assert r.text == f"connect to 127.0.0.2:{port}: connection refused"
    assert (r.mx_host, r.mx_ip) == ("mx.example.com", "127.0.0.2")


async def test_source_ip_not_local(mx_factory: MxFactory) -> None:
    mx = await mx_factory()
    r = await opened_fails(mx, ClientOptions(ehlo_name="relay.test", source_ip="192.0.2.1"))
    assert (r.stage, r.code, r.local_ip) == (Stage.CONNECT, None, "192.0.2.1")
    assert r.text == (f"connect to 127.0.0.2:{mx.port}: "
                      "cannot bind source address 192.0.2.1 (not an address of this host?)")
    assert mx.connections == []


async def test_mx_hosts_share_one_port(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    first = await mx_factory("127.0.0.2")
    second = await mx_factory("127.0.0.3", port=first.port, data_reply="452 4.3.1 full")
    a = await connect(first, conns)
    b = await connect(second, conns)
    assert (await a.deliver("a@relay.test", "b@example.com", MSG)).delivered
    r = await b.deliver("a@relay.test", "b@example.com", MSG)
    assert (r.stage, r.code, r.mx_ip) == (Stage.DOT, 452, "127.0.0.3")
    assert len(first.messages) == 1 and second.messages == []


async def test_idle_connection_closed_by_server_is_not_usable(mx_factory: MxFactory,
                                                              conns: list[SmtpConnection]) -> None:
    mx = await mx_factory()
    c = await connect(mx, conns)
    assert c.usable
    await mx.stop()
    for _ in range(50):
        if not c.usable:
            break
        await asyncio.sleep(0.01)
    assert not c.usable


async def test_messages_per_connection_limit_421(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(max_messages=2)
    c = await connect(mx, conns)
    for _ in range(2):
        assert (await c.deliver("a@relay.test", "b@example.com", MSG)).delivered
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert (r.stage, r.code, r.enhanced) == (Stage.MAIL, 421, "4.7.0")
    assert not c.usable


# -- TLS ----------------------------------------------------------------------------------------


async def test_starttls_opportunistic(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(tls=True)
    c = await connect(mx, conns)
    assert c.tls
    assert "STARTTLS" not in c.extensions  # the EHLO after TLS
    r = await c.deliver("a@relay.test", "b@example.com", MSG)
    assert r.delivered and r.tls
    assert mx.connections[0].tls and mx.messages[0].tls
    assert [x.split()[0] for x in mx.commands[:3]] == ["EHLO", "STARTTLS", "EHLO"]


async def test_starttls_never(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(tls=True)
    c = await connect(mx, conns, ClientOptions(ehlo_name="relay.test", starttls="never"))
    assert not c.tls and "STARTTLS" in c.extensions
    assert (await c.deliver("a@relay.test", "b@example.com", MSG)).delivered
    assert not mx.messages[0].tls


async def test_starttls_handshake_failure(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(tls=True, drop_at="STARTTLS")
    r = await opened_fails(mx)
    assert (r.stage, r.code) == (Stage.STARTTLS, None)
    assert r.text.startswith("TLS handshake failed")
    mx.set(drop_at=None)  # the caller's fallback: the same host without TLS
    c = await connect(mx, conns, ClientOptions(ehlo_name="relay.test", starttls="never"))
    assert (await c.deliver("a@relay.test", "b@example.com", MSG)).delivered


async def test_starttls_refused_opportunistic_stays_plain(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(tls=True, starttls="454 4.7.0 TLS not available now")
    c = await connect(mx, conns)
    assert not c.tls
    assert (await c.deliver("a@relay.test", "b@example.com", MSG)).delivered


async def test_starttls_required(mx_factory: MxFactory) -> None:
    mx = await mx_factory(tls=False)
    r = await opened_fails(mx, ClientOptions(ehlo_name="relay.test", starttls="required"))
    assert (r.stage, r.code) == (Stage.STARTTLS, None)
    assert "not offered" in r.text


async def test_starttls_verified(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    """tls_verify=True refuses the test CA (not in the system store): a handshake failure."""
    mx = await mx_factory(tls=True)
    r = await opened_fails(mx, ClientOptions(ehlo_name="relay.test", starttls="required", tls_verify=True))
    assert (r.stage, r.code) == (Stage.STARTTLS, None)
    assert "certificate" in r.text.lower()


# -- reuse ---------------------------------------------------------------------------------------


async def test_connection_reuse(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(rcpt="550 5.1.1 user unknown", rcpt_only={"gone@example.com"})
    c = await connect(mx, conns)
    results = [await c.deliver("a@relay.test", rcpt, MSG + rcpt.encode())
               for rcpt in ("one@example.com", "gone@example.com", "two@example.com", "three@example.com")]
    assert [r.stage for r in results] == [Stage.DOT, Stage.RCPT, Stage.DOT, Stage.DOT]
    assert [r.delivered for r in results] == [True, False, True, True]
    assert len(mx.connections) == 1
    assert [m.rcpt for m in mx.messages] == ["one@example.com", "two@example.com", "three@example.com"]
    assert [m.content for m in mx.messages] == [MSG + r.encode() + b"\r\n" for r in
                                                ("one@example.com", "two@example.com", "three@example.com")]
    assert mx.commands.count("RSET") == 1
    assert c.messages_sent == 4 and c.usable
    await c.close()
    assert not c.usable
    await asyncio.sleep(0.05)
    assert mx.commands[-1] == "QUIT" and mx.active == 0


async def test_reset_and_close_are_tolerant(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory()
    c = await connect(mx, conns)
    assert await c.reset()
    await mx.stop()
    await asyncio.sleep(0.02)
    assert not await c.reset()
    await c.close()
    await c.close()


# -- refused locally -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mail_from", "rcpt", "stage"),
    [
        ("a@relay.test", "b@example.com\r\nRCPT TO:<evil@example.net>", Stage.RCPT),
        ("a@relay.test\nx", "b@example.com", Stage.MAIL),
        ("a@relay.test", "b\x00@example.com", Stage.RCPT),
        ("a@relay.test", "b\r@example.com", Stage.RCPT),
        ("a@relay.test", "b\x7f@example.com", Stage.RCPT),
    ],
)
async def test_control_characters_refused_locally(mx_factory: MxFactory, conns: list[SmtpConnection],
                                                  mail_from: str, rcpt: str, stage: Stage) -> None:
    mx = await mx_factory()
    c = await connect(mx, conns)
    before = list(mx.commands)
    r = await c.deliver(mail_from, rcpt, MSG)
    assert (r.stage, r.code, r.enhanced) == (stage, None, None)
    assert r.text.startswith("refused locally: ")
    await asyncio.sleep(0.02)
    assert mx.commands == before  # nothing reached the wire
    assert c.usable and c.messages_sent == 0


async def test_smtputf8_needed_but_not_offered(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(smtputf8=False)
    c = await connect(mx, conns)
    before = list(mx.commands)
    r = await c.deliver("a@relay.test", "josé@example.com", MSG)
    assert (r.stage, r.code, r.enhanced) == (Stage.MAIL, 553, "5.6.7")
    assert r.text.startswith("refused locally: ")
    r2 = await c.deliver("a@relay.test", "b@example.com", MSG, smtputf8=True)
    assert (r2.stage, r2.code) == (Stage.MAIL, 553)
    assert mx.commands == before and c.usable


async def test_smtputf8_offered(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    mx = await mx_factory(smtputf8=True)
    c = await connect(mx, conns)
    r = await c.deliver("a@relay.test", "josé@example.com", "Subject: olá\r\n\r\nx\r\n".encode())
    assert r.delivered, r
    assert mx.messages[0].rcpt == "josé@example.com"
    assert "SMTPUTF8" in mx.messages[0].mail_options


# -- throughput ----------------------------------------------------------------------------------


async def test_many_messages_over_one_reused_connection(mx_factory: MxFactory, conns: list[SmtpConnection]) -> None:
    """400 transactions over one connection (RSET between them), all delivered. Speed is measured by
    bench/, not here: a timed assertion fails on a busy machine without saying anything about us."""
    mx = await mx_factory()
    c = await connect(mx, conns)
    body = MSG + (b"x" * 76 + b"\r\n") * 40  # ~3 KB
    n = 400
    for i in range(n):
        r = await c.deliver("a@relay.test", f"r{i}@example.com", body)
        assert r.delivered
    assert len(mx.messages) == n and len(mx.connections) == 1
    assert sorted(m.rcpt for m in mx.messages) == sorted(f"r{i}@example.com" for i in range(n))
