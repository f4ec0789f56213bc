"""ScriptedMx: a real aiosmtpd SMTP server on a loopback address, with named misbehaviours.

It runs in the test's own event loop (``loop.create_server`` with an aiosmtpd ``SMTP`` protocol,
like aiosmtpd's UnthreadedController: no threads), so tests stay deterministic and cheap.

    async with ScriptedMx("127.0.0.2") as mx:                 # port 0 = ephemeral, see mx.port
        mx.set(rcpt="550 5.1.1 user unknown", rcpt_only={"nobody@example.com"})
        ...                                                    # deliver to ("127.0.0.2", mx.port)
        assert mx.messages[0].content == b"Subject: hi\\r\\n\\r\\nbody\\r\\n"
        assert len(mx.connections) == 1

Several MX hosts of one test share one port (the relay's configured MX port): start the first
with port 0, the others with ``port=first.port`` on other addresses (127.0.0.3, ...).

Behaviour (:class:`MxScript`) is read at the moment it matters (per connection for ``tls``/
``smtputf8``, per command otherwise), so ``mx.set(...)`` changes a running server. Reply strings
may hold several lines separated by ``\\n`` (sent as a multi-line reply, e.g.
``"550-5.1.1 first\\n550 5.1.1 second"``).

Recorded: ``connections`` (one :class:`MxConnection` per accepted TCP connection, with its peer,
TLS flag, commands and accepted-message count), ``messages`` (every ACCEPTED message, content as
received, i.e. with dot-stuffing undone), ``commands`` (every command line of every connection),
``active``/``max_active`` (open connections now / at most), ``errors`` (exceptions in sessions).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, Envelope, Session

ALL_STAGES = frozenset({"GREETING", "EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", "DOT", "RSET", "NOOP", "QUIT"})
# hook(stage, arg) -> reply or None: stage "MAIL" (arg: sender), "RCPT" (recipient), "DOT" (recipient).
# E.g. rate limiting after two accepted messages:
#   mx.set(hook=lambda stage, arg: "451 4.7.1 slow down" if stage == "DOT" and len(mx.messages) >= 2 else None)
Hook = Callable[[str, str], "str | None"]


@dataclass(frozen=True)
class MxScript:
    """What the server does. Every field's default is a well-behaved server."""

    greeting: str | None = None  # a refusal sent instead of "220 ..." (e.g. "421 4.7.0 try later"), then close
    ehlo: str | None = None  # reply to EHLO (e.g. "502 5.5.1 no"), so the client falls back to HELO
    starttls: str | None = None  # reply to STARTTLS instead of starting TLS (e.g. "454 4.7.0 not now")
    mail: str | None = None  # reply to MAIL FROM
    rcpt: str | None = None  # reply to RCPT TO ...
    rcpt_only: Collection[str] | None = None  # ... only for these addresses (None: every recipient)
    data: str | None = None  # reply to the DATA command instead of 354
    data_reply: str | None = None  # reply after the final dot (e.g. "451 4.7.1 rate limited")
    delay: float = 0.0  # seconds to wait before replying ...
    delay_on: Collection[str] = ALL_STAGES  # ... at these stages (GREETING, EHLO, MAIL, RCPT, DATA, DOT, ...)
    # Close the connection instead of replying at this stage: "GREETING", "EHLO", "MAIL", "RCPT",
    # "DATA" (no 354), "DOT" (content received, no final reply) or "STARTTLS" (sends 220, then
    # closes: the client's TLS handshake fails).
    drop_at: str | None = None
    tls: bool = False  # offer STARTTLS (trustme certificate, see ScriptedMx.ca)
    pipelining: bool = True  # advertise PIPELINING
    smtputf8: bool = False  # advertise (and accept) SMTPUTF8
    max_messages: int | None = None  # per connection; the next MAIL gets 421 and the connection closes
    hook: Hook | None = None  # computed replies (e.g. "451 after the 3rd message"); None = script decides


@dataclass
class MxConnection:
    index: int
    peer: tuple[str, int] | None = None
    tls: bool = False
    commands: list[str] = field(default_factory=list)
    messages: int = 0  # accepted on this connection
    open: bool = True


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt: str  # the first (with our client: the only) recipient
    rcpts: tuple[str, ...]
    content: bytes  # as received, dot-stuffing undone, CRLF line ends
    mail_options: tuple[str, ...]  # e.g. ("SIZE=123", "BODY=8BITMIME", "SMTPUTF8")
    tls: bool
    peer: tuple[str, int] | None
    connection: int  # MxConnection.index
    at: float  # time.monotonic() when accepted


@functools.cache
def _ca() -> trustme.CA:
    return trustme.CA()


def _abort(transport: asyncio.BaseTransport | None) -> None:
    abort = getattr(transport, "abort", None)  # uvloop's transports are not asyncio.Transport subclasses
    if abort is not None:
        abort()
    elif transport is not None:
        transport.close()


def _lines(reply: str) -> str:
    return "\r\n".join(reply.replace("\r\n", "\n").split("\n"))


class _Handler:
    def __init__(self, mx: ScriptedMx, conn: MxConnection) -> None:
        self.mx = mx
        self.conn = conn

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would log a traceback (e.g. a client that refused our certificate); keep it instead
        self.mx.errors.append(error)
        return f"500 5.0.0 Error: ({type(error).__name__}) {error}"

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.mx.script.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self.conn.tls = True
        return True

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> Any:
        s = self.mx.script
        reply = (s.hook("MAIL", address) if s.hook else None) or s.mail
        if reply:
            return _lines(reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> Any:
        s = self.mx.script
        reply = s.hook("RCPT", address) if s.hook else None
        if not reply and s.rcpt and (s.rcpt_only is None or address in s.rcpt_only):
            reply = s.rcpt
        if reply:
            return _lines(reply)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> Any:
        s = self.mx.script
        if s.delay and "DOT" in s.delay_on:
            await asyncio.sleep(s.delay)
        if s.drop_at == "DOT":
            _abort(server.transport)
            await asyncio.get_running_loop().create_future()  # cancelled by connection_lost
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        reply = (s.hook("DOT", rcpt) if s.hook else None) or s.data_reply
        if reply:
            return _lines(reply)
        content = envelope.original_content or b""
        self.mx.messages.append(ReceivedMessage(
            mail_from=envelope.mail_from or "", rcpt=rcpt, rcpts=tuple(envelope.rcpt_tos), content=content,
            mail_options=tuple(envelope.mail_options), tls=self.conn.tls, peer=self.conn.peer,
            connection=self.conn.index, at=time.monotonic()))
        self.conn.messages += 1
        return f"250 2.0.0 Ok: queued as {len(self.mx.messages)}"


class _Commands(dict[str, Any]):
    """aiosmtpd's command table; unknown commands are recorded (and refused) too."""

    def __init__(self, session: _ScriptedSMTP, methods: dict[str, Any]) -> None:
        super().__init__(methods)
        self.session = session

    def get(self, name: str, default: Any = None) -> Any:
        method = super().get(name)
        if method is not None:
            return method

        async def unknown(arg: str | None) -> None:
            line = name if arg is None else f"{name} {arg}"
            self.session.conn.commands.append(line)
            self.session.mx.commands.append(line)
            await self.session.push(f'500 5.5.2 Error: command "{name}" not recognized')

        return unknown


class _ScriptedSMTP(SMTP):
    def __init__(self, mx: ScriptedMx, conn: MxConnection) -> None:
        script = mx.script
        super().__init__(_Handler(mx, conn), hostname=mx.hostname, enable_SMTPUTF8=script.smtputf8,
                         tls_context=mx.server_tls_context() if script.tls else None,
                         loop=asyncio.get_running_loop())
        self.mx = mx
        self.conn = conn
        self._smtp_methods = _Commands(self, {name: self._scripted(name, method)
                                              for name, method in self._smtp_methods.items()})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.conn.peer is None
        super().connection_made(transport)
        if first:
            self.conn.peer = transport.get_extra_info("peername")
            self.mx.active += 1
            self.mx.max_active = max(self.mx.max_active, self.mx.active)

    def connection_lost(self, error: Exception | None) -> None:
        if self.conn.open:
            self.conn.open = False
            self.mx.active -= 1
        self.mx.sessions.discard(self)
        super().connection_lost(error)

    async def _reply(self, reply: str) -> None:
        await self.push(_lines(reply))

    async def _delay(self, stage: str) -> None:
        s = self.mx.script
        if s.delay and stage in s.delay_on:
            await asyncio.sleep(s.delay)

    def _drop(self) -> None:
        _abort(self.transport)

    async def _handle_client(self) -> None:
        s = self.mx.script
        await self._delay("GREETING")
        if s.drop_at == "GREETING":
            self._drop()
            return
        if s.greeting is not None:
            await self._reply(s.greeting)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _scripted(self, name: str, method: Callable[[str | None], Any]) -> Callable[[str | None], Any]:
        async def run(arg: str | None) -> None:
            line = name if arg is None else f"{name} {arg}"
            self.conn.commands.append(line)
            self.mx.commands.append(line)
            s = self.mx.script
            await self._delay(name)
            if s.drop_at == name:
                if name == "STARTTLS":
                    await self.push("220 2.0.0 Ready to start TLS")
                self._drop()
                return
            scripted = {"EHLO": s.ehlo, "STARTTLS": s.starttls, "DATA": s.data}.get(name)
            if scripted:
                await self._reply(scripted)
                return
            if name == "MAIL" and s.max_messages is not None and self.conn.messages >= s.max_messages:
                await self.push("421 4.7.0 Too many messages on this connection, closing")
                if self.transport is not None:
                    self.transport.close()
                return
            await method(arg)

        return run


class ScriptedMx:
    """A real SMTP server on ``host:port`` (loopback) following :class:`MxScript`."""

    def __init__(self, host: str = "127.0.0.2", port: int = 0, *, hostname: str | None = None,
                 **script: Any) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname or f"mx-{host}.test"
        self.script = MxScript(**script)
        self.connections: list[MxConnection] = []
        self.messages: list[ReceivedMessage] = []
        self.commands: list[str] = []
        self.errors: list[Exception] = []  # exceptions inside sessions (failed TLS handshakes, ...)
        self.sessions: set[_ScriptedSMTP] = set()
        self.active = 0
        self.max_active = 0
        self._server: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None

    # -- control ----------------------------------------------------------------------------------
    def set(self, **changes: Any) -> None:
        """Change the script of the running server (unknown names raise TypeError)."""
        self.script = replace(self.script, **changes)

    def clear(self) -> None:
        """Forget what was recorded so far (connections, messages, commands)."""
        self.connections.clear()
        self.messages.clear()
        self.commands.clear()
        self.max_active = self.active

    @property
    def ca(self) -> trustme.CA:
        """The CA of the STARTTLS certificate: ``mx.ca.configure_trust(ctx)`` to verify it."""
        return _ca()

    def server_tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            _ca().issue_cert(self.hostname, "localhost", self.host).configure_cert(ctx)
            self._tls = ctx
        return self._tls

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> ScriptedMx:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def _accept(self) -> _ScriptedSMTP:
        conn = MxConnection(index=len(self.connections))
        self.connections.append(conn)
        session = _ScriptedSMTP(self, conn)
        self.sessions.add(session)
        return session

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for session in list(self.sessions):
            _abort(session.transport)
        await self._server.wait_closed()
        self._server = None
        await asyncio.sleep(0)  # let connection_lost callbacks run

    async def __aenter__(self) -> ScriptedMx:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port
