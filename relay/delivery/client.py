"""Outbound SMTP client: one connection to one MX address, every reply returned as data.

What it does: :func:`open_connection` connects (from ``source_ip`` when set), reads the greeting,
says EHLO (HELO when EHLO gets a 5xx), upgrades with STARTTLS when offered and says EHLO again.
:meth:`SmtpConnection.deliver` runs ONE transaction for ONE recipient (VERP: every recipient has
its own MAIL FROM) and returns an :class:`AttemptResult` whose stage is where it stopped: the first
non-success reply among MAIL, RCPT, DATA, or DOT with the final reply (2xx = delivered).

What it guarantees:

- No reply, timeout, disconnect or TLS failure escapes as an exception: each becomes an
  ``AttemptResult`` (code None when the server gave no reply). Only cancellation propagates (and
  leaves the connection unusable).
- Addresses with control characters (CR, LF, NUL, ...) never reach the wire; non-ASCII addresses
  are sent only with SMTPUTF8 to a server that offers it.
- After a refused transaction the connection is RSET so it can carry the next message;
  ``usable`` is False after 421, a timeout, a disconnect, a protocol error or unsolicited data
  while idle (a server that said "421 idle timeout" and hung up), so a pool never hands out a
  dead connection.

What it must never do: retry, classify or sleep. That is the dispatcher's and classifier's job.

Why our own client and not aiosmtplib: aiosmtplib raises on every non-2xx reply, has no
PIPELINING and formats multi-line replies its own way, so wrapping it would mean mapping its
exception tree back to stages and codes and still paying one round trip per command. A small
``asyncio.Protocol`` gives the exact code, enhanced code and text of each reply, pipelined
MAIL/RCPT/DATA (2 round trips per message on a reused connection instead of 4), a cheap "is this
pooled connection still alive" check, and STARTTLS through ``loop.start_tls`` (works on uvloop).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import re
import ssl
import time
from dataclasses import dataclass
from typing import Literal, cast

from relay.delivery.wireformat import MalformedReply, Reply, data_payload, take_reply
from relay.rules.types import AttemptResult, Stage

STARTTLS_MODES = ("opportunistic", "never", "required")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUIT_TIMEOUT = 5.0
_PHRASE = {
    Stage.CONNECT: "connect",
    Stage.GREETING: "greeting",
    Stage.EHLO: "EHLO",
    Stage.STARTTLS: "STARTTLS",
    Stage.MAIL: "MAIL FROM",
    Stage.RCPT: "RCPT TO",
    Stage.DATA: "DATA",
    Stage.DOT: "DATA (end of data)",
}


@dataclass(frozen=True)
class ClientOptions:
    ehlo_name: str
    source_ip: str | None = None  # bind outgoing connections to this address (our "send IP")
    connect_timeout: float = 30.0
    command_timeout: float = 60.0  # per reply
    data_timeout: float = 600.0  # sending the content and waiting for the reply to the final dot
    starttls: str = "opportunistic"  # one of STARTTLS_MODES
    # Opportunistic TLS does not verify the certificate (Postfix "may"): an unverified TLS session
    # is still better than plaintext, and refusing it would only push mail to plaintext.
    tls_verify: bool = False

    def __post_init__(self) -> None:
        if self.starttls not in STARTTLS_MODES:
            raise ValueError(f"starttls must be one of {', '.join(STARTTLS_MODES)}, not {self.starttls!r}")


class _Failure(Exception):
    """Internal only: the connection failed (lost, timeout, garbage). Turned into data at the
    public boundary, never raised out of this module."""

    def __init__(self, kind: Literal["lost", "timeout", "protocol"], detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def describe(self, stage: Stage) -> str:
        what = _PHRASE[stage]
        if self.kind == "lost":
            return f"connection lost during {what}" + (f": {self.detail}" if self.detail else "")
        if self.kind == "timeout":
            return f"timeout during {what} ({self.detail})"
        return f"protocol error during {what}: {self.detail}"


class _SmtpProtocol(asyncio.Protocol):
    """Buffers the server's bytes and hands out whole replies; knows when the peer is gone."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.lost = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # used by SmtpConnection
    async def send(self, data: bytes, timeout: float) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise _Failure("lost")
        self.transport.write(data)
        if self._paused:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._drain
            except TimeoutError:
                raise _Failure("timeout", f"no progress sending for {timeout:g}s") from None
            if self.lost:
                raise _Failure("lost")

    async def read_reply(self, timeout: float) -> Reply:
        # Pipelined replies usually arrive in one segment: the 2nd and 3rd are already buffered,
        # so take them without arming (and cancelling) a timeout each.
        reply = self._take_reply()
        if reply is not None:
            return reply
        try:
            async with asyncio.timeout(timeout):
                while True:
                    reply = self._take_reply()
                    if reply is not None:
                        return reply
                    if self.lost:
                        raise _Failure("lost")
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
        except TimeoutError:
            raise _Failure("timeout", f"no reply within {timeout:g}s") from None

    def _take_reply(self) -> Reply | None:
        try:
            return take_reply(self.buf)
        except MalformedReply as exc:
            raise _Failure("protocol", str(exc)) from None

    async def start_tls(self, ctx: ssl.SSLContext, server_hostname: str | None, timeout: float) -> None:
        assert self.transport is not None
        self.buf.clear()  # RFC 3207 §4.2: nothing from before the handshake counts
        loop = asyncio.get_running_loop()
        tls = await loop.start_tls(self.transport, self, ctx, server_hostname=server_hostname,
                                   ssl_handshake_timeout=timeout)
        if tls is None:
            raise ConnectionError("TLS transport closed during handshake")
        self.transport = tls

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    async def close(self, timeout: float) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.transport is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._closed)
            except TimeoutError:
                self.transport.abort()


@functools.cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    # Cached: building a context (loading the CA store) costs milliseconds; contexts are shareable.
    if verify:
        return ssl.create_default_context()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _os_error_text(exc: OSError, source_ip: str | None) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if source_ip and exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind source address {source_ip} (not an address of this host?)"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class SmtpConnection:
    """An open, greeted (and, if possible, TLS-upgraded) SMTP session. Use :func:`open_connection`."""

    def __init__(self, host_name: str, ip: str, port: int, opts: ClientOptions, proto: _SmtpProtocol) -> None:
        self.host_name = host_name
        self.ip = ip
        self.port = port
        self.opts = opts
        self.tls = False
        self.messages_sent = 0  # transactions started (MAIL sent) on this connection
        self.extensions: dict[str, str] = {}  # EHLO keyword (upper case) -> parameters
        self._proto = proto
        self._broken = False
        self._closed = False
        transport = proto.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        self.local_ip: str | None = str(sockname[0]) if sockname else opts.source_ip

    @property
    def usable(self) -> bool:
        # Unsolicited bytes while idle mean the server said something (typically 421) on its own.
        return not (self._broken or self._closed or self._proto.lost or self._proto.buf)

    def _result(self, stage: Stage, code: int | None, enhanced: str | None, text: str, t0: float) -> AttemptResult:
        return AttemptResult(stage, code, enhanced, text, mx_host=self.host_name, mx_ip=self.ip,
                             duration_ms=int((time.monotonic() - t0) * 1000), tls=self.tls,
                             local_ip=self.local_ip)

    def _reply_result(self, stage: Stage, reply: Reply, t0: float) -> AttemptResult:
        if reply.code == 421:  # RFC 5321 §3.8: the server is closing the channel
            self._broken = True
        return self._result(stage, reply.code, reply.enhanced, reply.text, t0)

    def _failure_result(self, stage: Stage, failure: _Failure, t0: float) -> AttemptResult:
        self._broken = True
        self._proto.abort()
        return self._result(stage, None, None, failure.describe(stage), t0)

    async def _command(self, line: bytes, timeout: float | None = None) -> Reply:
        t = self.opts.command_timeout if timeout is None else timeout
        await self._proto.send(line, t)
        return await self._proto.read_reply(t)

    # -- session set-up -------------------------------------------------------------------------
    async def _ehlo(self, t0: float) -> AttemptResult | None:
        name = self.opts.ehlo_name.encode("ascii", "replace")
        reply = await self._command(b"EHLO " + name + b"\r\n")
        if reply.positive:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.strip().partition(" ")
                if keyword:
                    self.extensions[keyword.upper()] = params.strip()
            return None
        if 500 <= reply.code < 600:  # an old server: RFC 5321 §3.2 fallback to HELO
            reply = await self._command(b"HELO " + name + b"\r\n")
            if reply.positive:
                self.extensions = {}
                return None
        return self._reply_result(Stage.EHLO, reply, t0)

    async def _handshake(self, t0: float) -> AttemptResult | None:
        stage = Stage.GREETING
        try:
            greeting = await self._proto.read_reply(self.opts.command_timeout)
            if not greeting.positive:
                return self._reply_result(Stage.GREETING, greeting, t0)
            stage = Stage.EHLO
            failed = await self._ehlo(t0)
            if failed is not None or self.opts.starttls == "never":
                return failed
            stage = Stage.STARTTLS
            if "STARTTLS" not in self.extensions:
                if self.opts.starttls == "required":
                    return self._result(Stage.STARTTLS, None, None,
                                        "STARTTLS required but not offered by the server", t0)
                return None
            reply = await self._command(b"STARTTLS\r\n")
            if reply.code != 220:
                if self.opts.starttls == "required" or reply.code == 421:
                    return self._reply_result(Stage.STARTTLS, reply, t0)
                return None  # opportunistic: carry on in plaintext on this connection
            try:
                name = self.host_name.rstrip(".")  # DNS names may come fully qualified
                sni = name if name and name != self.ip else None
                await self._proto.start_tls(_tls_context(self.opts.tls_verify), sni, self.opts.command_timeout)
            except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
                self._broken = True
                self._proto.abort()
                detail = str(exc) or type(exc).__name__
                return self._result(Stage.STARTTLS, None, None, f"TLS handshake failed: {detail}", t0)
            self.tls = True
            stage = Stage.EHLO
            return await self._ehlo(t0)  # RFC 3207 §4.2: forget what was said before TLS
        except _Failure as f:
            return self._failure_result(stage, f, t0)

    # -- transactions ---------------------------------------------------------------------------
    async def deliver(self, mail_from: str, rcpt: str, content: bytes, *, smtputf8: bool = False,
                      size: int | None = None) -> AttemptResult:
        """One transaction for one recipient. Never raises (except on cancellation)."""
        t0 = time.monotonic()
        if _CONTROL.search(mail_from):
            return self._result(Stage.MAIL, None, None,
                                f"refused locally: control character in sender address {mail_from!r}", t0)
        if _CONTROL.search(rcpt):
            return self._result(Stage.RCPT, None, None,
                                f"refused locally: control character in recipient address {rcpt!r}", t0)
        if not self.usable:
            return self._result(Stage.MAIL, None, None, "connection not usable (closed by either side)", t0)
        utf8 = smtputf8 or not (mail_from.isascii() and rcpt.isascii())
        if utf8 and "SMTPUTF8" not in self.extensions:
            return self._result(Stage.MAIL, 553, "5.6.7",
                                f"refused locally: SMTPUTF8 needed but not offered by {self.host_name}", t0)
        payload = data_payload(content)
        params = ""
        if "SIZE" in self.extensions:
            params += f" SIZE={size if size is not None else len(payload)}"
        if "8BITMIME" in self.extensions and not content.isascii():
            params += " BODY=8BITMIME"
        if utf8:
            params += " SMTPUTF8"
        enc = "utf-8" if utf8 else "ascii"
        mail_cmd = f"MAIL FROM:<{mail_from}>{params}\r\n".encode(enc)
        rcpt_cmd = f"RCPT TO:<{rcpt}>\r\n".encode(enc)
        self.messages_sent += 1
        try:
            return await self._transaction(mail_cmd, rcpt_cmd, payload, t0)
        except BaseException:  # cancellation: the session is in an unknown state
            self._broken = True
            self._proto.abort()
            raise

    async def _transaction(self, mail_cmd: bytes, rcpt_cmd: bytes, payload: bytes, t0: float) -> AttemptResult:
        proto = self._proto
        timeout = self.opts.command_timeout
        stages = (Stage.MAIL, Stage.RCPT, Stage.DATA)
        replies: list[Reply] = []
        stage = Stage.MAIL
        try:
            if "PIPELINING" in self.extensions:  # RFC 2920: one write, then the three replies
                await proto.send(mail_cmd + rcpt_cmd + b"DATA\r\n", timeout)
                for current in stages:
                    stage = current  # for the failure text if this reply never comes
                    reply = await proto.read_reply(timeout)
                    replies.append(reply)
                    if reply.code == 421:
                        break
            else:
                for stage, line in zip(stages, (mail_cmd, rcpt_cmd, b"DATA\r\n"), strict=True):
                    reply = await self._command(line)
                    replies.append(reply)
                    if not (reply.positive or (stage is Stage.DATA and reply.code == 354)):
                        break
        except _Failure as f:
            failed = self._first_failure(replies)
            if failed is None:
                return self._failure_result(stage, f, t0)
            self._broken = True  # the earlier refusal is the useful answer; the session is gone
            proto.abort()
            return self._reply_result(failed[0], failed[1], t0)
        failed = self._first_failure(replies)
        if failed is not None:
            return await self._abandon(failed[0], failed[1], replies, t0)
        stage = Stage.DOT
        try:
            await proto.send(payload, self.opts.data_timeout)
            final = await proto.read_reply(self.opts.data_timeout)
        except _Failure as f:
            return self._failure_result(Stage.DOT, f, t0)
        return self._reply_result(Stage.DOT, final, t0)

    @staticmethod
    def _first_failure(replies: list[Reply]) -> tuple[Stage, Reply] | None:
        for stage, reply in zip((Stage.MAIL, Stage.RCPT, Stage.DATA), replies, strict=False):
            ok = reply.code == 354 if stage is Stage.DATA else reply.positive
            if not ok:
                return stage, reply
        return None

    async def _abandon(self, stage: Stage, reply: Reply, replies: list[Reply], t0: float) -> AttemptResult:
        """A refused transaction: end it cleanly so the connection can carry the next message."""
        result = self._reply_result(stage, reply, t0)
        if self._broken:
            self._proto.abort()
            return result
        try:
            if len(replies) == 3 and replies[2].code == 354:
                # Pipelined DATA was accepted although MAIL or RCPT failed: send an empty message
                # (RFC 2920 §3.1) and ignore its reply; then RSET discards the transaction.
                await self._proto.send(b".\r\n", self.opts.command_timeout)
                await self._proto.read_reply(self.opts.command_timeout)
            rset = await self._command(b"RSET\r\n")
            if not rset.positive:
                self._broken = True
        except _Failure:
            self._broken = True
        if self._broken:
            self._proto.abort()
        return result

    async def reset(self) -> bool:
        """RSET; returns whether the connection is still usable."""
        if not self.usable:
            return False
        try:
            if not (await self._command(b"RSET\r\n")).positive:
                self._broken = True
        except _Failure:
            self._broken = True
        if self._broken:
            self._proto.abort()
        return self.usable

    async def close(self) -> None:
        """QUIT (when the session is still alive) and close. Never raises; idempotent."""
        if self._closed:
            return
        self._closed = True
        if not (self._broken or self._proto.lost):
            try:
                await self._command(b"QUIT\r\n", min(self.opts.command_timeout, _QUIT_TIMEOUT))
            except _Failure:
                pass
        try:
            await self._proto.close(_QUIT_TIMEOUT)
        except (OSError, ssl.SSLError):
            pass

    def __repr__(self) -> str:
        return (f"<SmtpConnection {self.host_name}[{self.ip}]:{self.port} tls={self.tls} "
                f"sent={self.messages_sent} usable={self.usable}>")


async def open_connection(host_name: str, ip: str, port: int, opts: ClientOptions) -> SmtpConnection | AttemptResult:
    """Connect to ``ip:port`` (the MX ``host_name``), greet, EHLO, STARTTLS when offered.

    Returns a ready :class:`SmtpConnection`, or an :class:`AttemptResult` at stage CONNECT,
    GREETING, EHLO or STARTTLS. A STARTTLS result with code None is a failed handshake: the caller
    may retry this host with ``starttls="never"``.
    """
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    proto = _SmtpProtocol()
    local = (opts.source_ip, 0) if opts.source_ip else None

    def failed(text: str) -> AttemptResult:
        return AttemptResult(Stage.CONNECT, None, None, f"connect to {_addr(ip, port)}: {text}", mx_host=host_name,
                             mx_ip=ip, duration_ms=int((time.monotonic() - t0) * 1000), local_ip=opts.source_ip)

    try:
        async with asyncio.timeout(opts.connect_timeout):
            await loop.create_connection(lambda: proto, ip, port, local_addr=local)
    except TimeoutError:
        proto.abort()
        return failed(f"timed out after {opts.connect_timeout:g}s")
    except OSError as exc:
        return failed(_os_error_text(exc, opts.source_ip))
    conn = SmtpConnection(host_name, ip, port, opts, proto)
    try:
        result = await conn._handshake(t0)
    except BaseException:
        proto.abort()
        raise
    if result is not None:
        await conn.close()
        return result
    return conn
