"""HardenedSMTP over real sockets on 127.0.0.1, with a recording handler.

Clients: raw asyncio streams (wire-level tricks), smtplib in a thread, aiosmtplib.
"""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import pytest
import trustme

from relay.smtp.engine import AuthReply, DataSink, ListenerOptions, SessionInfo
from relay.smtp.listener import Listener, start_listener

HOST = "127.0.0.1"


# region recording handler
@dataclass
class Recorder:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)
    sessions: list[SessionInfo] = field(default_factory=list)
    rcpt_raise: set[str] = field(default_factory=set)
    rcpt_refuse: set[str] = field(default_factory=set)
    rcpt_close: set[str] = field(default_factory=set)
    rcpt_delay: float = 0.0
    write_delay: float = 0.0
    finish_delay: float = 0.0
    refuse_connect: str | None = None
    users: dict[bytes, bytes] = field(default_factory=lambda: {b"user": b"secret"})
    done_at: list[tuple[str, float]] = field(default_factory=list)

    def count(self, name: str) -> int:
        return sum(1 for e in self.events if e[0] == name)


class RecordingSink:
    def __init__(self, rec: Recorder, sender: str) -> None:
        self.rec = rec
        self.sender = sender
        self.parts: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        assert isinstance(chunk, bytes) and chunk
        self.parts.append(chunk)
        if self.rec.write_delay:
            await asyncio.sleep(self.rec.write_delay)

    async def finish(self) -> str:
        if self.rec.finish_delay:
            await asyncio.sleep(self.rec.finish_delay)
        body = b"".join(self.parts)
        self.rec.messages.append(body)
        self.rec.done_at.append((self.sender, time.monotonic()))
        return f"250 2.0.0 Ok: queued as M{len(self.rec.messages)}"

    async def abort(self, reason: str) -> None:
        self.rec.aborts.append(reason)


class RecordingHandler:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.sender = ""

    async def on_connect(self, session: SessionInfo) -> str | None:
        self.rec.sessions.append(session)
        self.rec.events.append(("connect", session.peer_ip))
        return self.rec.refuse_connect

    async def authenticate(self, session: SessionInfo, mechanism: str, login: bytes, password: bytes) -> AuthReply:
        self.rec.events.append(("auth", mechanism, login))
        if self.rec.users.get(login) == password:
            return AuthReply(True, "235 2.7.0 Authentication successful", principal=login.decode())
        return AuthReply(False, "535 5.7.8 Authentication credentials invalid")

    async def on_mail(self, session: SessionInfo, sender: str, params: dict[str, str | bool]) -> str:
        self.rec.events.append(("mail", sender, dict(params)))
        self.sender = sender
        return "250 2.1.0 Ok"

    async def on_rcpt(self, session: SessionInfo, recipient: str, params: dict[str, str | bool]) -> str:
        self.rec.events.append(("rcpt", recipient))
        if self.rec.rcpt_delay:
            await asyncio.sleep(self.rec.rcpt_delay)
        if recipient in self.rec.rcpt_raise:
            raise RuntimeError("boom")
        if recipient in self.rec.rcpt_refuse:
            return "550 5.1.1 No such user"
        if recipient in self.rec.rcpt_close:
            return "421 4.7.0 Too many recipients today, closing"
        return "250 2.1.5 Ok"

    async def on_data(self, session: SessionInfo) -> DataSink | str:
        self.rec.events.append(("data",))
        return RecordingSink(self.rec, self.sender)

    async def on_reset(self, session: SessionInfo) -> None:
        self.rec.events.append(("reset",))

    async def on_disconnect(self, session: SessionInfo) -> None:
        self.rec.events.append(("disconnect",))


# endregion

# region fixtures and raw client
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


Serve = Callable[..., Awaitable[tuple[Listener, Recorder]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    listeners: list[Listener] = []

    async def start(rec: Recorder | None = None, **kw: Any) -> tuple[Listener, Recorder]:
        r = rec or Recorder()
        opts = ListenerOptions(**{"name": "test", "hostname": "mx.test", "require_auth": False, **kw})
        listener = await start_listener(opts, lambda: RecordingHandler(r), HOST, 0)
        listeners.append(listener)
        return listener, r

    yield start
    for listener in listeners:
        await listener.stop(1.0)


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, tls: ssl.SSLContext | None = None, greet: bool = True) -> Raw:
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=tls, server_hostname="localhost" if tls else None, limit=1 << 20)
        raw = cls(reader, writer)
        if greet:
            code, _ = await raw.reply()
            assert code == 220
        return raw

    async def reply(self, timeout: float = 5.0) -> tuple[int, list[str]]:
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            assert line.endswith(b"\r\n"), (line, lines)
            text = line[:-2].decode()
            lines.append(text[4:])
            if text[3:4] == " ":
                return int(text[:3]), lines

    def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def cmd(self, line: str | bytes) -> tuple[int, list[str]]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def code(self, line: str | bytes) -> int:
        return (await self.cmd(line))[0]

    async def at_eof(self, timeout: float = 5.0) -> bool:
        data = await asyncio.wait_for(self.reader.read(), timeout)
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass

    async def start_tls(self, ctx: ssl.SSLContext) -> None:
        await self.writer.start_tls(ctx, server_hostname="localhost")


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# endregion


async def test_ehlo_keywords_and_starttls_auth(serve: Serve, server_ctx: ssl.SSLContext,
                                               client_ctx: ssl.SSLContext) -> None:
    listener, rec = await serve(tls_context=server_ctx)
    c = await Raw.open(listener.port)
    code, lines = await c.cmd("EHLO client.test")
    assert code == 250
    assert lines == ["mx.test", "PIPELINING", "SIZE 31457280", "8BITMIME", "SMTPUTF8",
                     "ENHANCEDSTATUSCODES", "STARTTLS"]
    assert await c.code("AUTH PLAIN " + b64(b"\0user\0secret")) == 538
    assert await c.code("STARTTLS extra") == 501
    assert await c.code("STARTTLS") == 220
    await c.start_tls(client_ctx)
    code, lines = await c.cmd("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in lines and "STARTTLS" not in lines
    assert (await c.cmd("STARTTLS"))[1][0].startswith("5.5.1")
    assert await c.code("AUTH PLAIN " + b64(b"\0user\0secret")) == 235
    assert await c.code("AUTH PLAIN " + b64(b"\0user\0secret")) == 503
    await c.close()
    await eventually(lambda: rec.count("disconnect") == 1)
    assert rec.sessions[0].tls and rec.sessions[0].principal == "user"
    assert rec.sessions[0].tls_version is not None


async def test_helo_sequencing_and_misc_verbs(serve: Serve) -> None:
    listener, rec = await serve()
    c = await Raw.open(listener.port)
    assert await c.cmd("MAIL FROM:<a@b.test>") == (503, ["5.5.1 Error: send HELO/EHLO first"])
    assert await c.cmd("HELO client.test") == (250, ["mx.test"])
    assert await c.code("RCPT TO:<x@y.test>") == 503
    assert await c.code("MAIL FROM:<a@b.test> SIZE=10") == 555  # params need EHLO
    assert await c.code("EHLO client.test") == 250
    assert await c.code("DATA") == 503
    assert await c.code("VRFY someone") == 252
    assert await c.code("EXPN list") == 502
    assert await c.code("HELP") == 214
    assert await c.code("NOOP") == 250
    assert await c.cmd("FOO bar") == (500, ["5.5.1 Command unrecognized"])
    assert await c.code("AUTH PLAIN") == 538  # auth_requires_tls, no TLS
    assert await c.code("MAIL FROM:<>") == 250  # null sender
    assert rec.events[-1] == ("mail", "", {})
    assert await c.code("MAIL FROM:<a@b.test>") == 503  # nested
    assert await c.code("DATA") == 503  # no RCPT yet
    assert await c.code("RSET") == 250
    assert await c.code("MAIL FROM:<a@b.test> BODY=8BITMIME SMTPUTF8 SIZE=100 AUTH=<>") == 250
    assert rec.events[-1] == ("mail", "a@b.test", {"BODY": "8BITMIME", "SMTPUTF8": True, "SIZE": "100",
                                                   "AUTH": "<>"})
    assert await c.code("RCPT TO:<ü@exämple.test>") == 250  # SMTPUTF8 transaction
    assert await c.code("RCPT TO:<x@y.test> NOTIFY=NEVER") == 555
    assert await c.code("RCPT TO:<>") == 553
    assert await c.code("RCPT TO:<a\x01b@y.test>") == 553
    assert await c.code("RCPT TO:<x@y.test") == 501
    assert await c.code("RSET") == 250
    assert await c.code("MAIL FROM:<ü@exämple.test>") == 553  # non-ASCII without SMTPUTF8
    assert await c.code("MAIL FROM:<a@b.test> BODY=9BIT") == 501
    assert await c.code("MAIL FROM:<a@b.test> FOO=1") == 555
    assert await c.code("EHLO bad\x01host") == 501
    assert await c.cmd("QUIT") == (221, ["2.0.0 Bye"])
    assert await c.at_eof()
    await eventually(lambda: rec.count("disconnect") == 1)
    assert rec.count("reset") == 2  # the two RSETs (the refused MAILs opened nothing)


async def test_pipelined_replies_arrive_in_one_write(serve: Serve) -> None:
    listener, rec = await serve()
    rec.rcpt_delay = 0.1  # a per-reply flush would let the MAIL reply out long before the rest
    c = await Raw.open(listener.port)
    assert await c.code("EHLO client.test") == 250
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n")
    first = await asyncio.wait_for(c.reader.read(65536), 5)
    assert first.count(b"\r\n") == 4, first
    assert first.startswith(b"250 2.1.0") and first.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    # message + pipelined follow-up commands in one write
    c.send(b"hello\r\n.\r\nMAIL FROM:<b@b.test>\r\nRCPT TO:<x@y.test>\r\nRSET\r\nNOOP\r\n")
    codes = [(await c.reply())[0] for _ in range(5)]
    assert codes == [250, 250, 250, 250, 250]
    assert rec.messages == [b"hello\r\n"]
    await c.close()


SMUGGLING = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r", b"\r\n.\r\r\n"]


@pytest.mark.parametrize("normalize", [False, True])
async def test_smuggling_variants_do_not_end_data(serve: Serve, normalize: bool) -> None:
    listener, rec = await serve(normalize_bare_lf=normalize)
    c = await Raw.open(listener.port)
    assert await c.code("EHLO client.test") == 250
    for variant in SMUGGLING:
        assert await c.code("MAIL FROM:<a@b.test>") == 250
        assert await c.code("RCPT TO:<x@y.test>") == 250
        assert await c.code("DATA") == 354
        c.send(b"Subject: x\r\n\r\nhello" + variant
               + b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nsmuggled\r\n\r\n.\r\n")
        code, lines = await c.reply()
        if normalize:
            assert code == 250
        else:
            assert (code, lines) == (550, ["5.6.0 Message contains bare CR or LF characters"])
        assert await c.code("NOOP") == 250  # exactly one reply per message: nothing was smuggled
    await c.close()
    await eventually(lambda: rec.count("disconnect") == 1)
    assert [e for e in rec.events if e[0] == "mail" and e[1] == "evil@x.test"] == []
    if normalize:
        assert len(rec.messages) == len(SMUGGLING)
        assert all(b"smuggled" in m for m in rec.messages)
    else:
        assert rec.messages == [] and rec.aborts == ["bare"] * len(SMUGGLING)
        assert rec.count("reset") == len(SMUGGLING)


async def test_bare_lf_in_data_rejected_or_normalized(serve: Serve) -> None:
    for normalize, want in [(False, 550), (True, 250)]:
        listener, rec = await serve(normalize_bare_lf=normalize)
        c = await Raw.open(listener.port)
        assert await c.code("EHLO c") == 250
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
        assert [(await c.reply())[0] for _ in range(3)] == [250, 250, 354]
        assert await c.code(b"a\nb\rc\r\n.") == want
        assert await c.code("NOOP") == 250
        await c.close()
        assert rec.messages == ([b"a\r\nb\r\nc\r\n"] if normalize else [])


async def test_dot_unstuffing_exact_bytes(serve: Serve) -> None:
    listener, rec = await serve()
    c = await Raw.open(listener.port)
    assert await c.code("EHLO c") == 250
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert [(await c.reply())[0] for _ in range(3)] == [250, 250, 354]
    body = b"..leading\r\n...\r\n.x\r\n\r\n" + b"y" * 70000 + b"\r\n..\r\n"
    for i in range(0, len(body), 997):  # odd-sized pieces cross the decoder's chunk edges
        c.send(body[i:i + 997])
        await c.writer.drain()
    assert await c.code(b".") == 250
    assert rec.messages == [b".leading\r\n..\r\nx\r\n\r\n" + b"y" * 70000 + b"\r\n.\r\n"]
    # smtplib does its own dot-stuffing
    port = listener.port

    def client() -> None:
        with smtplib.SMTP(HOST, port) as s:
            s.sendmail("a@b.test", ["x@y.test"], b"Subject: t\r\n\r\n.\r\n..two\r\nend\r\n")

    await asyncio.to_thread(client)
    assert rec.messages[1] == b"Subject: t\r\n\r\n.\r\n..two\r\nend\r\n"
    await c.close()


async def test_command_framing_errors(serve: Serve) -> None:
    listener, rec = await serve()
    c = await Raw.open(listener.port)
    c.send(b"NOOP\n")
    assert await c.reply() == (500, ["5.5.2 Syntax error: bare LF in command"])
    c.send(b"NO\rOP\r\n")
    assert (await c.reply())[0] == 500
    c.send(b"NOOP\x00\r\n")
    assert (await c.reply())[0] == 500
    c.send(b"\r\n")
    assert (await c.reply())[0] == 500
    assert await c.code("NOOP " + "x" * 505) == 250  # exactly 512 octets with CRLF
    assert await c.cmd("NOOP " + "x" * 506) == (500, ["5.5.2 Line too long"])
    assert await c.code("NOOP") == 250
    assert rec.sessions[0].protocol_errors == 5
    await c.close()


async def test_megabyte_line_without_lf_uses_bounded_memory(serve: Serve) -> None:
    listener, _rec = await serve()
    c = await Raw.open(listener.port)
    (session,) = listener.sessions
    peak = 0
    for _ in range(16):
        c.send(b"A" * 65536)
        await c.writer.drain()
        await asyncio.sleep(0.005)
        peak = max(peak, len(session._inbuf))
    c.send(b"\r\nNOOP\r\n")
    assert await c.reply() == (500, ["5.5.2 Line too long"])
    assert (await c.reply())[0] == 250
    assert peak <= 1024  # the over-long line is dropped as it arrives
    await c.close()


async def test_too_many_errors_closes(serve: Serve) -> None:
    listener, rec = await serve()
    c = await Raw.open(listener.port)
    c.send(b"BOGUS\r\n" * 21)
    for _ in range(20):
        assert (await c.reply())[0] == 500
    assert await c.reply() == (421, ["4.7.0 Too many errors"])
    assert await c.at_eof()
    await eventually(lambda: rec.count("disconnect") == 1)


async def test_starttls_discards_pipelined_injection(serve: Serve, server_ctx: ssl.SSLContext,
                                                     client_ctx: ssl.SSLContext) -> None:
    listener, rec = await serve(tls_context=server_ctx)
    c = await Raw.open(listener.port)
    assert await c.code("EHLO c") == 250
    assert await c.code("MAIL FROM:<a@b.test>") == 250
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
    assert (await c.reply())[0] == 220
    await c.start_tls(client_ctx)
    code, lines = await c.cmd("EHLO c")  # the first reply after TLS is the EHLO's
    assert code == 250 and lines[0] == "mx.test"
    assert await c.code("MAIL FROM:<a@b.test>") == 250  # STARTTLS ended the earlier transaction
    await c.close()
    await eventually(lambda: rec.count("disconnect") == 1)
    assert [e for e in rec.events if e[0] == "mail" and e[1] == "evil@x.test"] == []
    assert rec.count("reset") == 2  # STARTTLS, then the disconnect with an open transaction


async def test_implicit_tls_and_aiosmtplib_auth(serve: Serve, server_ctx: ssl.SSLContext,
                                                client_ctx: ssl.SSLContext) -> None:
    listener, rec = await serve(tls_context=server_ctx, implicit_tls=True, require_auth=True)
    c = await Raw.open(listener.port, tls=client_ctx)
    _code, lines = await c.cmd("EHLO c")
    assert "AUTH PLAIN LOGIN" in lines and "STARTTLS" not in lines
    assert await c.code("MAIL FROM:<a@b.test>") == 530
    assert await c.code("AUTH PLAIN") == 334
    assert await c.cmd("*") == (501, ["5.7.0 Authentication cancelled"])
    assert await c.code("AUTH PLAIN !!!notbase64") == 501
    assert await c.code("AUTH CRAM-MD5") == 504
    assert await c.code("AUTH PLAIN " + b64(b"\0user\0wrong")) == 535
    assert await c.cmd("AUTH LOGIN") == (334, ["VXNlcm5hbWU6"])
    assert await c.cmd(b64(b"user")) == (334, ["UGFzc3dvcmQ6"])
    assert await c.code(b64(b"secret")) == 235
    assert await c.code("MAIL FROM:<a@b.test>") == 250
    await c.close()

    smtp = aiosmtplib.SMTP(hostname=HOST, port=listener.port, use_tls=True, tls_context=client_ctx)
    await smtp.connect()
    await smtp.login("user", "secret")
    errors, _ = await smtp.sendmail("a@b.test", ["x@y.test"], "Subject: hi\r\n\r\nbody\r\n")
    assert errors == {}
    await smtp.quit()
    assert rec.messages == [b"Subject: hi\r\n\r\nbody\r\n"]
    assert all(s.tls for s in rec.sessions)


async def test_long_auth_line_and_failed_handshake(serve: Serve, server_ctx: ssl.SSLContext,
                                                   client_ctx: ssl.SSLContext) -> None:
    listener, rec = await serve(tls_context=server_ctx)
    rec.users[b"user"] = b"k" * 900  # AUTH lines may exceed 512 octets (RFC 4954: 12288)
    c = await Raw.open(listener.port)
    assert await c.code("EHLO c") == 250
    assert await c.code("STARTTLS") == 220
    await c.start_tls(client_ctx)
    assert await c.code("EHLO c") == 250
    assert await c.code("AUTH PLAIN " + b64(b"\0user\0" + b"k" * 900)) == 235
    await c.close()

    c = await Raw.open(listener.port)
    assert await c.code("EHLO c") == 250
    assert await c.code("AUTH PLAIN") == 538
    assert await c.code("STARTTLS") == 220
    c.send(b"this is not a TLS ClientHello\r\n")
    assert await c.at_eof()
    await eventually(lambda: rec.count("disconnect") == 2)


async def test_pipelined_flood_of_commands(serve: Serve) -> None:
    listener, _ = await serve()
    c = await Raw.open(listener.port)
    c.send(b"NOOP\r\n" * 20000)  # 120 KB in one write; replies flushed in batches
    for _ in range(20000):
        assert (await c.reply())[0] == 250
    assert await c.code("QUIT") == 221


async def test_smtplib_starttls_login(serve: Serve, server_ctx: ssl.SSLContext,
                                      client_ctx: ssl.SSLContext) -> None:
    listener, rec = await serve(tls_context=server_ctx, require_auth=True)
    port = listener.port

    def client() -> tuple[int, int]:
        with smtplib.SMTP(HOST, port) as s:
            s.starttls(context=client_ctx)
            try:
                s.login("user", "bad")
                bad = 0
            except smtplib.SMTPAuthenticationError as exc:
                bad = exc.smtp_code
            s.login("user", "secret")
            s.sendmail("a@b.test", ["x@y.test"], b"x\r\n")
            return bad, s.noop()[0]

    assert await asyncio.to_thread(client) == (535, 250)
    assert rec.messages == [b"x\r\n"]


async def test_size_limits(serve: Serve) -> None:
    listener, rec = await serve(max_message_size=100_000)
    c = await Raw.open(listener.port)
    _code, lines = await c.cmd("EHLO c")
    assert "SIZE 100000" in lines
    assert await c.cmd("MAIL FROM:<a@b.test> SIZE=100001") == (
        552, ["5.3.4 Message size exceeds fixed maximum message size"])
    c.send(b"MAIL FROM:<a@b.test> SIZE=1000\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert [(await c.reply())[0] for _ in range(3)] == [250, 250, 354]
    c.send((b"z" * 998 + b"\r\n") * 150)
    assert await c.code(b".") == 552
    assert rec.aborts == ["size"] and rec.messages == []
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nsmall\r\n.\r\n")
    assert [(await c.reply())[0] for _ in range(4)] == [250, 250, 354, 250]
    assert rec.messages == [b"small\r\n"]
    await c.close()


async def test_recipient_limit(serve: Serve) -> None:
    listener, rec = await serve(max_recipients=3)
    rec.rcpt_refuse = {"no@y.test"}
    c = await Raw.open(listener.port)
    assert await c.code("EHLO c") == 250
    assert await c.code("MAIL FROM:<a@b.test>") == 250
    assert await c.code("RCPT TO:<no@y.test>") == 550  # refused: does not count
    for i in range(3):
        assert await c.code(f"RCPT TO:<r{i}@y.test>") == 250
    assert await c.cmd("RCPT TO:<r4@y.test>") == (452, ["4.5.3 Too many recipients"])
    assert rec.sessions[0].protocol_errors == 0
    await c.close()


async def test_idle_timeout(serve: Serve) -> None:
    listener, rec = await serve(command_timeout=0.3)
    c = await Raw.open(listener.port)
    assert await c.reply() == (421, ["4.4.2 Timeout"])
    assert await c.at_eof()
    await eventually(lambda: rec.count("disconnect") == 1)


async def test_trickling_data_dropped_by_data_timeout(serve: Serve) -> None:
    listener, rec = await serve(data_timeout=0.6, data_idle_timeout=0.3)
    c = await Raw.open(listener.port)
    c.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert [(await c.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
    started = time.monotonic()
    reply = asyncio.create_task(c.reply())
    while not reply.done() and time.monotonic() - started < 3:
        c.send(b"x")  # one byte every 0.1 s: never idle, but too slow overall
        await asyncio.sleep(0.1)
    assert await reply == (421, ["4.4.2 Timeout"])
    assert 0.5 < time.monotonic() - started < 2.0
    await eventually(lambda: rec.count("disconnect") == 1)
    assert rec.aborts == ["timeout"] and rec.count("reset") == 1

    c = await Raw.open(listener.port)
    c.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\npartial")
    assert [(await c.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
    assert await c.reply() == (421, ["4.4.2 Timeout"])  # data_idle_timeout
    await eventually(lambda: rec.count("disconnect") == 2)
    assert rec.aborts == ["timeout", "timeout"]


async def test_big_message_does_not_stall_other_sessions(serve: Serve) -> None:
    listener, rec = await serve()
    rec.write_delay = 0.002  # the big sink is slow-ish: ~460 chunks
    line = b"x" * 998 + b"\r\n"
    big = line * 30_000  # 30 MB

    async def big_sender() -> float:
        c = await Raw.open(listener.port)
        c.send(b"EHLO big\r\nMAIL FROM:<big@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
        assert [(await c.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
        for i in range(0, len(big), 1 << 20):
            c.send(big[i:i + (1 << 20)])
            await c.writer.drain()
        assert await c.code(b".") == 250
        await c.close()
        return time.monotonic()

    async def small_sender() -> float:
        await asyncio.sleep(0.05)
        smtp = aiosmtplib.SMTP(hostname=HOST, port=listener.port)
        await smtp.connect()
        for _ in range(5):
            errors, _ = await smtp.sendmail("small@b.test", ["x@y.test"], "Subject: s\r\n\r\nsmall\r\n")
            assert errors == {}
        await smtp.quit()
        return time.monotonic()

    big_done, small_done = await asyncio.gather(big_sender(), small_sender())
    assert small_done < big_done
    assert [s for s, _ in rec.done_at] == ["small@b.test"] * 5 + ["big@b.test"]
    assert rec.messages[-1] == big


async def test_handler_exception_gives_451_and_session_continues(serve: Serve) -> None:
    listener, rec = await serve()
    rec.rcpt_raise = {"boom@y.test"}
    c = await Raw.open(listener.port)
    assert await c.code("EHLO c") == 250
    assert await c.code("MAIL FROM:<a@b.test>") == 250
    assert await c.cmd("RCPT TO:<boom@y.test>") == (451, ["4.3.0 Internal error"])
    assert rec.count("reset") == 1
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nok\r\n.\r\n")
    assert [(await c.reply())[0] for _ in range(4)] == [250, 250, 354, 250]
    await c.close()


async def test_new_ehlo_resets_and_handler_421_closes(serve: Serve) -> None:
    listener, rec = await serve()
    rec.rcpt_close = {"stop@y.test"}
    c = await Raw.open(listener.port)
    assert await c.code("EHLO c") == 250
    assert await c.code("MAIL FROM:<a@b.test>") == 250
    assert await c.code("EHLO c") == 250  # ends the transaction
    assert rec.count("reset") == 1
    assert await c.code("RCPT TO:<x@y.test>") == 503
    assert await c.code("MAIL FROM:<a@b.test>") == 250
    assert await c.cmd("RCPT TO:<stop@y.test>") == (421, ["4.7.0 Too many recipients today, closing"])
    assert await c.at_eof()
    await eventually(lambda: rec.count("disconnect") == 1)
    assert rec.count("reset") == 2


async def test_connection_limit_per_ip(serve: Serve) -> None:
    listener, rec = await serve(max_connections_per_ip=2)
    a = await Raw.open(listener.port)
    b = await Raw.open(listener.port)
    c = await Raw.open(listener.port, greet=False)
    assert await c.reply() == (421, ["4.7.0 Too many connections from your address"])
    assert await c.at_eof()
    await a.cmd("QUIT")
    await eventually(lambda: listener.gate.count(HOST) == 1)
    d = await Raw.open(listener.port)
    assert await d.code("NOOP") == 250
    for x in (b, d):
        await x.close()
    await eventually(lambda: listener.gate.total == 0)
    assert rec.count("connect") == rec.count("disconnect") == 3


async def test_disconnect_during_data_and_refused_connect(serve: Serve) -> None:
    listener, rec = await serve()
    c = await Raw.open(listener.port)
    c.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nhalf a message")
    assert [(await c.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
    c.writer.transport.abort()
    await eventually(lambda: rec.count("disconnect") == 1)
    await asyncio.sleep(0.05)
    assert rec.aborts == ["disconnect"] and rec.count("reset") == 1 and rec.count("disconnect") == 1

    rec.refuse_connect = "421 4.7.0 Go away"
    c = await Raw.open(listener.port, greet=False)
    assert await c.reply() == (421, ["4.7.0 Go away"])
    assert await c.at_eof()
    await eventually(lambda: rec.count("disconnect") == 2)


async def test_stop_is_graceful_for_data_and_closes_idle(serve: Serve) -> None:
    listener, rec = await serve()
    rec.finish_delay = 0.2
    idle = await Raw.open(listener.port)
    busy = await Raw.open(listener.port)
    busy.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nfirst half\r\n")
    assert [(await busy.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
    stopping = asyncio.create_task(listener.stop(grace=3.0))
    assert await idle.reply() == (421, ["4.3.2 Service shutting down"])
    assert await idle.at_eof()
    busy.send(b"second half\r\n.\r\n")
    assert await busy.reply() == (250, ["2.0.0 Ok: queued as M1"])
    assert await busy.reply() == (421, ["4.3.2 Service shutting down"])
    await asyncio.wait_for(stopping, 5)
    assert rec.messages == [b"first half\r\nsecond half\r\n"]
    assert rec.count("disconnect") == 2 and listener.active_sessions == 0


def test_misconfigured_listener_is_refused() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="implicit_tls"):
            await start_listener(ListenerOptions("x", "h", implicit_tls=True, require_auth=False),
                                 lambda: RecordingHandler(Recorder()), HOST, 0)
        with pytest.raises(ValueError, match="require_auth"):
            await start_listener(ListenerOptions("x", "h", auth_enabled=False),
                                 lambda: RecordingHandler(Recorder()), HOST, 0)

    asyncio.run(main())


def test_key_scenarios_under_uvloop(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """Production runs on uvloop: its transports, start_tls and flow control must behave the same."""
    import uvloop  # a dependency on every platform we test on: a missing one is a failure, not a skip

    async def main() -> None:
        listeners: list[Listener] = []

        async def start(rec: Recorder | None = None, **kw: Any) -> tuple[Listener, Recorder]:
            r = rec or Recorder()
            opts = ListenerOptions(**{"name": "uv", "hostname": "mx.test", "require_auth": False, **kw})
            listener = await start_listener(opts, lambda: RecordingHandler(r), HOST, 0)
            listeners.append(listener)
            return listener, r

        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        try:
            await test_starttls_discards_pipelined_injection(start, server_ctx, client_ctx)
            await test_implicit_tls_and_aiosmtplib_auth(start, server_ctx, client_ctx)
            await test_pipelined_replies_arrive_in_one_write(start)
            await test_dot_unstuffing_exact_bytes(start)
            await test_megabyte_line_without_lf_uses_bounded_memory(start)
            await test_size_limits(start)
            await test_disconnect_during_data_and_refused_connect(start)
            await test_stop_is_graceful_for_data_and_closes_idle(start)
        finally:
            for listener in listeners:
                await listener.stop(1.0)

    uvloop.run(main())
