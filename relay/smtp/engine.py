"""HardenedSMTP: mailrelay's SMTP protocol engine, an ``aiosmtpd.smtp.SMTP`` subclass.

aiosmtpd parses SMTP well but has gaps we must not inherit (no PIPELINING, whole-DATA buffering with
a per-line loop, LimitOverrunError on long lines, a 1001-byte reader limit, a synchronous
authenticator). This subclass keeps aiosmtpd's address helpers (``_getaddr`` as the slow path,
``_strip_command_keyword``) and replaces the rest:

- I/O (``relay/smtp/wire.py``): one input buffer, our own line framing and limits, replies flushed
  per pipelined group, deadlines, STARTTLS with discard of injected plaintext.
- Verbs (``relay/smtp/verbs.py``, a mixin) and DATA (here): DATA is streamed in 64 KiB steps
  through the chunk decoder of ``relay/smtp/dataread.py`` into a :class:`DataSink`; only
  ``CRLF.CRLF`` ends the data; bare CR/LF rejected or normalised.

Handler contract (what :class:`SmtpHandler` implementations can rely on):

- One handler instance per admitted connection (``handler_factory()`` runs after the per-IP gate).
- ``on_connect`` first, ``on_disconnect`` last and exactly once, whatever happens (also after an
  exception, a timeout, a shutdown or a cancelled session).
- ``on_reset`` is called when a transaction whose MAIL got a 2xx ends without ``finish()``: new
  EHLO/HELO, QUIT, disconnect, timeout, aborted DATA (after ``abort()``), a handler exception. RSET
  and STARTTLS call it unconditionally. It must be idempotent.
- A reply starting with 2 counts as accepted (MAIL opens the transaction, RCPT counts toward DATA
  and ``max_recipients``). A reply starting with ``421`` (from any hook, or ``finish()``) is sent and
  the connection is closed.
- ``finish()`` ends the transaction whatever it returns (no ``on_reset`` after it).
- An exception from a hook: logged with traceback, ``451 4.3.0 Internal error``, transaction
  reset (``on_reset``), session continues. From ``on_connect``: ``421 4.3.0`` and close.
- ``SessionInfo`` is updated in place by the engine (tls, helo, principal, ...); the handler may
  read it at any time and should treat it as read-only.
- Addresses arrive without ``<>``; the null sender is ``""``. MAIL params: keywords upper-cased
  (SIZE as a digit string, BODY upper-cased, SMTPUTF8 True, AUTH value verbatim); RCPT params are
  always empty (none is supported).

Reply texts the engine produces itself are the ``R_*`` constants here and in ``verbs.py``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, cast

from relay.smtp.conngate import ConnectionGate
from relay.smtp.dataread import DataDecoder
from relay.smtp.verbs import (
    R_BARE,
    R_NEED_HELO,
    R_NEED_MAIL,
    R_NEED_RCPT,
    R_TOO_BIG,
    CloseSession,
    TooManyErrors,
    VerbsMixin,
    set_tls_info,
)
from relay.smtp.wire import Disconnected, IdleTimeout, SessionEnd, StopRequested

__all__ = [
    "AuthReply",
    "DataSink",
    "HardenedSMTP",
    "ListenerOptions",
    "SessionInfo",
    "SmtpHandler",
]

log = logging.getLogger("relay.smtp.engine")

CHUNK = 64 * 1024  # DATA: bytes taken from the input buffer per decoder step


@dataclass(frozen=True)
class ListenerOptions:
    name: str                       # "smtp", "submission-tls", "feedback" (for logs)
    hostname: str                   # greeting / EHLO name
    tls_context: ssl.SSLContext | None = None   # enables STARTTLS (and implicit TLS below)
    implicit_tls: bool = False      # TLS from the first byte (port 465 style)
    auth_enabled: bool = True       # advertise/accept AUTH PLAIN LOGIN
    auth_requires_tls: bool = True  # AUTH only after TLS (else 538 5.7.11)
    require_auth: bool = True       # MAIL before AUTH -> 530 5.7.0 Authentication required
    max_message_size: int = 30 * 1024 * 1024   # SIZE advertised; over it -> 552 5.3.4
    max_recipients: int = 1000      # hard cap per transaction -> 452 4.5.3 Too many recipients
    command_line_limit: int = 512   # octets incl. CRLF; longer -> 500 5.5.2 Line too long
    max_protocol_errors: int = 20   # then 421 4.7.0 Too many errors, and close
    command_timeout: float = 300.0  # idle between commands -> 421 4.4.2 Timeout, close
    data_timeout: float = 600.0     # whole DATA phase deadline
    data_idle_timeout: float = 60.0  # no bytes for this long inside DATA -> drop
    normalize_bare_lf: bool = False  # DATA: bare CR/LF rejected (550 5.6.0); True: convert to CRLF
    max_connections_per_ip: int = 50   # more -> 421 4.7.0 at greeting, close
    enable_smtputf8: bool = True


@dataclass
class SessionInfo:
    """What the handler sees; one per connection. The engine updates it as the session goes."""

    peer_ip: str
    peer_port: int
    listener: str
    hostname: str = ""                 # the listener's greeting / EHLO name (ListenerOptions.hostname)
    tls: bool = False
    helo: str | None = None
    principal: object | None = None    # set when AUTH succeeded (AuthReply.principal)
    protocol_errors: int = 0
    esmtp: bool = False                # the last greeting was EHLO (not HELO)
    authenticated: bool = False        # AUTH succeeded (principal may legitimately be None)
    tls_version: str | None = None     # e.g. "TLSv1.3"
    tls_cipher: str | None = None
    smtputf8: bool = False             # the open transaction's MAIL had SMTPUTF8
    messages: int = 0                  # DATA transactions completed (finish() called)


@dataclass(frozen=True)
class AuthReply:
    ok: bool
    reply: str                 # e.g. "235 2.7.0 Authentication successful"
    principal: object | None = None
    close: bool = False        # send reply then close (e.g. 421 after too many failures)


class DataSink(Protocol):
    async def write(self, chunk: bytes) -> None:
        """Message bytes: dot-unstuffed, CRLF line ends, in order, in chunks (>= 64 KiB except
        the last), excluding the final ".\\r\\n"."""

    async def finish(self) -> str:
        """End of data reached cleanly; return the final reply (250 or 4xx/5xx)."""

    async def abort(self, reason: str) -> None:
        """Too big / bare LF / timeout / disconnect / error: discard; no 250 will be sent."""


class SmtpHandler(Protocol):
    async def on_connect(self, session: SessionInfo) -> str | None: ...

    async def authenticate(
        self, session: SessionInfo, mechanism: str, login: bytes, password: bytes
    ) -> AuthReply: ...

    async def on_mail(self, session: SessionInfo, sender: str, params: dict[str, str | bool]) -> str: ...

    async def on_rcpt(self, session: SessionInfo, recipient: str, params: dict[str, str | bool]) -> str: ...

    async def on_data(self, session: SessionInfo) -> DataSink | str: ...

    async def on_reset(self, session: SessionInfo) -> None: ...

    async def on_disconnect(self, session: SessionInfo) -> None: ...


# Replies the engine produces itself (handler replies pass through untouched).
R_TOO_MANY_CONN = "421 4.7.0 Too many connections from your address"
R_TOO_MANY_ERRORS = "421 4.7.0 Too many errors"
R_TIMEOUT = "421 4.4.2 Timeout"
R_SHUTDOWN = "421 4.3.2 Service shutting down"
R_INTERNAL = "451 4.3.0 Internal error"
R_INTERNAL_CLOSE = "421 4.3.0 Internal error"


def _peer(peer: object) -> tuple[str, int]:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return str(peer or ""), 0


class HardenedSMTP(VerbsMixin):
    """One SMTP connection. Built by :func:`relay.smtp.listener.start_listener`'s protocol factory.

    ``handler_factory`` is called once the connection is admitted (after the per-IP gate).
    ``sessions`` (optional) is the listener's registry: the session adds itself while it runs.
    """

    session_info: SessionInfo
    handler: SmtpHandler
    options: ListenerOptions
    task: asyncio.Task[None] | None

    _VERBS: ClassVar[dict[bytes, str]] = {
        b"EHLO": "smtp_EHLO", b"HELO": "smtp_HELO", b"MAIL": "smtp_MAIL", b"RCPT": "smtp_RCPT",
        b"DATA": "smtp_DATA", b"RSET": "smtp_RSET", b"QUIT": "smtp_QUIT", b"NOOP": "smtp_NOOP",
        b"AUTH": "smtp_AUTH", b"STARTTLS": "smtp_STARTTLS", b"VRFY": "smtp_VRFY",
        b"EXPN": "smtp_EXPN", b"HELP": "smtp_HELP",
    }

    def __init__(
        self,
        options: ListenerOptions,
        handler_factory: Callable[[], SmtpHandler],
        *,
        gate: ConnectionGate | None = None,
        sessions: set[HardenedSMTP] | None = None,
    ) -> None:
        super().__init__(write_timeout=options.command_timeout)
        self.options = options
        self._handler_factory = handler_factory
        self._gate = gate
        self._gate_ip: str | None = None
        self._sessions = sessions
        self.task = None
        self._mail_open = False  # a MAIL got a 2xx and the transaction has not ended
        self._rcpts = 0          # RCPTs that got a 2xx in this transaction

    # region connection lifecycle
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        self._tr = tr
        ip, port = _peer(tr.get_extra_info("peername"))
        gate = self._gate
        if gate is not None:
            if not gate.try_acquire(ip):
                self._shut = True
                tr.write(R_TOO_MANY_CONN.encode() + b"\r\n")
                tr.close()
                log.debug("%s: refused %s:%d (too many connections)", self.options.name, ip, port)
                return
            self._gate_ip = ip
        info = SessionInfo(peer_ip=ip, peer_port=port, listener=self.options.name, hostname=self.options.hostname)
        sslobj = tr.get_extra_info("ssl_object")
        if sslobj is not None:
            self._tls = True
            set_tls_info(info, sslobj)
        self.session_info = info
        try:
            self.handler = self._handler_factory()
        except Exception:
            log.exception("%s: handler factory failed", self.options.name)
            self._release_gate()
            self._shut = True
            tr.write(R_INTERNAL_CLOSE.encode() + b"\r\n")
            tr.close()
            return
        self.task = self.loop.create_task(self._handle_client())
        if self._sessions is not None:
            self._sessions.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._release_gate()

    def _release_gate(self) -> None:
        ip = self._gate_ip
        if ip is not None and self._gate is not None:
            self._gate_ip = None
            self._gate.release(ip)

    # endregion

    async def _handle_client(self) -> None:
        """The session: greeting, command loop, and exactly-once cleanup."""
        try:
            await self._session()
        except IdleTimeout:
            self._reply(R_TIMEOUT)
        except TooManyErrors:
            self._reply(R_TOO_MANY_ERRORS)
        except StopRequested:
            self._reply(R_SHUTDOWN)
        except (Disconnected, CloseSession):
            pass
        except Exception:
            log.exception("%s: session with %s crashed", self.options.name, self.session_info.peer_ip)
            self._reply(R_INTERNAL_CLOSE)
        finally:
            self._close_transport()
            self._release_gate()
            if self._mail_open:
                self._mail_open = False
                await self._call_reset()
            try:
                await self.handler.on_disconnect(self.session_info)
            except Exception:
                log.exception("%s: on_disconnect failed", self.options.name)
            if self._sessions is not None:
                self._sessions.discard(self)

    async def _session(self) -> None:
        info = self.session_info
        opts = self.options
        try:
            refusal = await self.handler.on_connect(info)
        except Exception:
            log.exception("%s: on_connect failed", opts.name)
            self._reply(R_INTERNAL_CLOSE)
            raise CloseSession from None
        if refusal:
            self._reply(refusal)
            raise CloseSession
        self._reply(f"220 {opts.hostname} ESMTP")
        verbs = self._VERBS
        limit = opts.command_line_limit
        timeout = opts.command_timeout
        loop = self.loop
        while True:
            if self._stopping:
                raise StopRequested
            line = await self._read_line(limit, loop.time() + timeout)
            if line is None:
                self._error("500 5.5.2 Line too long")
                continue
            n = len(line)
            if n < 2 or line[n - 2] != 0x0D:
                self._error("500 5.5.2 Syntax error: bare LF in command")
                continue
            body = line[: n - 2]
            if b"\r" in body:
                self._error("500 5.5.2 Syntax error: bare CR in command")
                continue
            if b"\x00" in body:
                self._error("500 5.5.2 Syntax error: NUL in command")
                continue
            verb, _, rest = body.partition(b" ")
            name = verbs.get(verb.upper())
            if name is None:
                self._error("500 5.5.1 Command unrecognized" if body else "500 5.5.2 Syntax error")
                continue
            arg: str | None = None
            rest = rest.strip()
            if rest:
                try:
                    arg = rest.decode("utf-8" if opts.enable_smtputf8 else "ascii")
                except UnicodeDecodeError:
                    self._error("500 5.5.2 Syntax error: invalid characters")
                    continue
            try:
                await getattr(self, name)(arg)
            except SessionEnd:
                raise
            except Exception:
                log.exception("%s: %s failed for %s", opts.name, name, info.peer_ip)
                self._reply(R_INTERNAL)
                self._mail_open = False
                self._rcpts = 0
                await self._call_reset()
            if len(self._out) > 64:
                await self._flush()

    # region DATA (streamed; see relay/smtp/dataread.py)
    async def smtp_DATA(self, arg: str | None) -> None:
        info = self.session_info
        if info.helo is None:
            return self._error(R_NEED_HELO)
        if not self._mail_open:
            return self._error(R_NEED_MAIL)
        if not self._rcpts:
            return self._error(R_NEED_RCPT)
        if arg is not None:
            return self._error("501 5.5.4 Syntax: DATA")
        result = await self.handler.on_data(info)
        if isinstance(result, str):
            self._handler_reply(result)
            return
        self._reply("354 End data with <CR><LF>.<CR><LF>")
        await self._receive_data(result)

    async def _abort_sink(self, sink: DataSink, reason: str) -> None:
        try:
            await sink.abort(reason)
        except Exception:
            log.exception("%s: DataSink.abort failed", self.options.name)

    async def _receive_data(self, sink: DataSink) -> None:
        """Stream the message into ``sink`` until CRLF.CRLF; reply; leave what follows buffered."""
        o, info, loop = self.options, self.session_info, self.loop
        dec = DataDecoder(o.normalize_bare_lf)
        max_size = o.max_message_size
        deadline = loop.time() + o.data_timeout
        idle = o.data_idle_timeout
        failed: str | None = None  # "size" | "bare" | "error": the sink has been aborted
        pending: list[bytes] = []
        pending_len = 0
        spins = 0
        while True:
            if not self._inbuf:
                try:
                    await self._wait_input(min(deadline, loop.time() + idle), False)
                except SessionEnd as exc:
                    if failed is None:
                        await self._abort_sink(sink, "timeout" if isinstance(exc, IdleTimeout) else "disconnect")
                    await self._end_transaction()
                    raise
                spins = 0
                continue
            pieces, rest = dec.feed(self._take(CHUNK))
            if failed is None:
                if max_size and dec.size > max_size:
                    failed = "size"
                elif dec.bare and not o.normalize_bare_lf:
                    failed = "bare"
                if failed is not None:
                    pending.clear()
                    await self._abort_sink(sink, failed)
                else:
                    for p in pieces:
                        pending.append(p)
                        pending_len += len(p)
                    if pending_len >= CHUNK or (rest is not None and pending):
                        chunk = pending[0] if len(pending) == 1 else b"".join(pending)
                        pending.clear()
                        pending_len = 0
                        try:
                            await sink.write(chunk)
                        except Exception:
                            log.exception("%s: DataSink.write failed", o.name)
                            failed = "error"
                            await self._abort_sink(sink, failed)
            if rest is not None:
                self._unread(rest)
                break
            spins += 1
            if spins >= 4:  # never monopolise the loop, even if the sink never suspends
                spins = 0
                await asyncio.sleep(0)
        if failed is None:
            self._mail_open = False
            self._rcpts = 0
            info.smtputf8 = False
            info.messages += 1
            reply = await sink.finish()  # an exception here: 451 + on_reset (command loop)
            self._handler_reply(reply)
            return
        await self._end_transaction()
        if failed == "size":
            self._reply(R_TOO_BIG)
        elif failed == "bare":
            self._error(R_BARE)
        else:
            self._reply(R_INTERNAL)

    # endregion
