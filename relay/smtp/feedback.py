"""FeedbackHandler: the second SMTP listener, for bounces and complaints coming back. (It lives with
the SMTP engine; ``relay/app.py`` hands it the feedback inbox and the parser as services.)

No AUTH. It accepts mail only for the configured feedback domains (exact, case-insensitive
domain; a plain dot-atom local part) and for postmaster@ each of them (RFC 5321 §4.5.1);
everything else gets 550 — it is not an open relay. The same engine hardening as submission
applies (size, line, error and connection limits, strict CRLF). A message is stored durably
(fsync) before the 250, then processed in the background.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.smtp.engine import AuthReply, DataSink, SessionInfo

log = logging.getLogger("mailrelay.feedback.listener")

_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")

R_OK_MAIL = "250 2.1.0 Ok"
R_OK_RCPT = "250 2.1.5 Ok"
R_RELAY = "550 5.7.1 Relaying denied: this server only accepts feedback for its own domains"
R_NO_RCPT = "554 5.5.1 No valid recipients"
R_TEMP = "451 4.3.0 Temporary failure storing message, try again later"
R_NO_AUTH = "502 5.5.1 AUTH not available here"
MAX_MEMORY = 64 * 1024 * 1024


class FeedbackStore(Protocol):
    """Durable storage of received feedback mail (``relay.feedback.inbox.FeedbackInbox``)."""

    async def store(self, raw: bytes) -> str:
        """Write ``raw`` durably (fsync) and return its id."""
        ...


@dataclass
class FeedbackServices:
    domains: frozenset[str]
    inbox: FeedbackStore
    process: Callable[[str, bytes, tuple[str, ...]], Coroutine[Any, Any, None]]  # (inbox id, raw, rcpts)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Also accepted, apart from the feedback rules above: the unsubscribe mailboxes of our
    # List-Unsubscribe headers (relay/tokens.py; checked by their signature).
    unsubscribe_mailbox: Callable[[str], bool] = field(default=lambda _address: False)


def accepts(domains: frozenset[str], address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at or domain.lower() not in domains:
        return False
    return bool(_DOT_ATOM.match(local))


class FeedbackHandler:
    def __init__(self, services: FeedbackServices) -> None:
        self.s = services
        self.rcpts: list[str] = []

    async def on_connect(self, session: SessionInfo) -> str | None:
        return None

    async def authenticate(self, session: SessionInfo, mechanism: str, login: bytes, password: bytes) -> AuthReply:
        return AuthReply(False, R_NO_AUTH)

    async def on_mail(self, session: SessionInfo, sender: str, params: dict[str, str | bool]) -> str:
        self.rcpts = []
        return R_OK_MAIL

    async def on_rcpt(self, session: SessionInfo, recipient: str, params: dict[str, str | bool]) -> str:
        if not accepts(self.s.domains, recipient) and not self._unsubscribe_mailbox(recipient):
            return R_RELAY
        self.rcpts.append(recipient)
        return R_OK_RCPT

    def _unsubscribe_mailbox(self, recipient: str) -> bool:
        domain = recipient.rpartition("@")[2].lower()
        return domain in self.s.domains and self.s.unsubscribe_mailbox(recipient)

    async def on_data(self, session: SessionInfo) -> DataSink | str:
        if not self.rcpts:
            return R_NO_RCPT
        return _InboxSink(self, tuple(self.rcpts))

    async def on_reset(self, session: SessionInfo) -> None:
        self.rcpts = []

    async def on_disconnect(self, session: SessionInfo) -> None:
        return None


class _InboxSink:
    def __init__(self, handler: FeedbackHandler, rcpts: tuple[str, ...]) -> None:
        self.h = handler
        self.rcpts = rcpts
        self.parts: list[bytes] = []
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= MAX_MEMORY:  # the engine's size limit is lower; this is a guard
            self.parts.append(chunk)

    async def finish(self) -> str:
        raw = b"".join(self.parts)
        self.parts = []
        self.h.rcpts = []
        try:
            mid = await self.h.s.inbox.store(raw)
        except OSError:
            log.exception("feedback store failed", extra={"event": "feedback_store_failed"})
            return R_TEMP
        task = asyncio.create_task(self.h.s.process(mid, raw, self.rcpts))
        self.h.s.tasks.add(task)
        task.add_done_callback(self.h.s.tasks.discard)
        return f"250 2.0.0 Ok: queued as {mid}"

    async def abort(self, reason: str) -> None:
        self.parts = []
