"""start_listener / Listener: run HardenedSMTP sessions in the current event loop.

Like aiosmtpd's ``UnthreadedController``: ``loop.create_server`` in the running loop, no threads.
Each listener has its own :class:`~relay.smtp.conngate.ConnectionGate` (connections per IP) and its
own session registry, which :meth:`Listener.stop` uses for a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

from relay.smtp.conngate import ConnectionGate
from relay.smtp.engine import HardenedSMTP, ListenerOptions, SmtpHandler

log = logging.getLogger("relay.smtp.listener")


class Listener:
    """A started SMTP listener. Use :func:`start_listener` to make one."""

    def __init__(
        self,
        options: ListenerOptions,
        server: asyncio.Server,
        sessions: set[HardenedSMTP],
        gate: ConnectionGate,
    ) -> None:
        self.options = options
        self.server = server
        self.sessions = sessions
        self.gate = gate
        self._stopped = False

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self.server.sockets)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listening socket (the real port when started with port=0)."""
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self.server.sockets]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def active_sessions(self) -> int:
        return len(self.sessions)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; sessions waiting for a command get ``421 4.3.2 Service shutting down``
        and are closed; a session inside a command (DATA and its ``finish()``, a handler call)
        completes it within ``grace`` seconds, then gets the 421. Whatever is left after ``grace``
        is aborted (its handler still sees on_reset/on_disconnect)."""
        if self._stopped:
            return
        self._stopped = True
        self.server.close()
        for s in list(self.sessions):
            s.request_shutdown()
        tasks = {s.task for s in self.sessions if s.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(grace, 0.0))
            if pending:
                log.warning("%s: %d session(s) still busy after %.1fs; aborting",
                            self.options.name, len(pending), grace)
                for s in list(self.sessions):
                    s.abort_connection()
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending, timeout=5.0)
        await self.server.wait_closed()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(grace=1.0)


def check_options(options: ListenerOptions) -> None:
    """Reject contradictory options (ValueError); warn about ones that make mail impossible."""
    name = options.name
    if options.implicit_tls and options.tls_context is None:
        raise ValueError(f"listener {name!r}: implicit_tls needs a tls_context")
    if options.require_auth and not options.auth_enabled:
        raise ValueError(f"listener {name!r}: require_auth needs auth_enabled")
    if options.require_auth and options.auth_requires_tls and options.tls_context is None:
        log.warning("%s: AUTH needs TLS but there is no tls_context: no client can send mail", name)
    if options.command_line_limit < 512:
        raise ValueError(f"listener {name!r}: command_line_limit must be >= 512 (RFC 5321)")


async def start_listener(
    options: ListenerOptions,
    handler_factory: Callable[[], SmtpHandler],
    host: str,
    port: int,
    *,
    backlog: int = 1024,
    sock: socket.socket | None = None,
) -> Listener:
    """Listen on ``host:port`` (port 0: an ephemeral port, see :attr:`Listener.addresses`).

    ``handler_factory`` is called once per admitted connection (after the per-IP gate).
    With ``options.implicit_tls`` the socket speaks TLS from the first byte (``tls_context``
    required); otherwise a ``tls_context`` enables STARTTLS. ``sock``: serve this listening socket
    (an intake worker's, inherited from the owner) instead of binding ``host:port``.
    """
    check_options(options)
    loop = asyncio.get_running_loop()
    gate = ConnectionGate(options.max_connections_per_ip)
    sessions: set[HardenedSMTP] = set()

    def factory() -> HardenedSMTP:
        return HardenedSMTP(options, handler_factory, gate=gate, sessions=sessions)

    where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port, "reuse_address": True}
    if options.implicit_tls:
        server = await loop.create_server(
            factory, backlog=backlog, ssl=options.tls_context,
            ssl_handshake_timeout=min(options.command_timeout, 60.0), **where,
        )
    else:
        server = await loop.create_server(factory, backlog=backlog, **where)
    listener = Listener(options, server, sessions, gate)
    log.info("%s: listening on %s", options.name, listener.addresses)
    return listener
