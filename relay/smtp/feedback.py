"""FeedbackHandler: the second SMTP listener, for bounces and complaints coming back. (It lives with
the SMTP engine; ``relay/app.py`` hands it the feedback inbox and the parser as services.)

No AUTH. At RCPT it accepts only what we issued or publish, on the configured feedback domains
(exact, case-insensitive): a signed return path (:mod:`relay.verp`) whose signature verifies,
``postmaster@`` (RFC 5321 §4.5.1), ``abuse@`` (RFC 2142) and the FBL mailboxes configured
(``feedback.mailboxes``). Everything else — other domains, ``%`` and ``!`` source routing, local
parts over 64 octets (RFC 5321 §4.5.3.1.1), quoted local parts, unknown mailboxes — gets
``550 5.1.1``: it is not an open relay, and a forged return path is refused before its DATA.
The same engine hardening as submission applies (size, line, error and connection limits, strict
CRLF). A message is stored durably (fsync) before the 250, then processed in the background.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay import verp
from relay.smtp.engine import AuthReply, DataSink, SessionInfo

log = logging.getLogger("mailrelay.feedback.listener")

_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")

R_OK_MAIL = "250 2.1.0 Ok"
R_OK_RCPT = "250 2.1.5 Ok"
R_NO_MAILBOX = "550 5.1.1 No such mailbox: this server only accepts bounces and complaints for its own addresses"
R_NO_RCPT = "554 5.5.1 No valid recipients"
R_TEMP = "451 4.3.0 Temporary failure storing message, try again later"
R_NO_AUTH = "502 5.5.1 AUTH not available here"
MAX_MEMORY = 64 * 1024 * 1024


class FeedbackStore(Protocol):
    """Durable storage of received feedback mail (``relay.feedback.inbox.FeedbackInbox``)."""

    async def store(self, raw: bytes) -> str:
        """Write ``raw`` durably (fsync) and return its id."""
        ...


#: Published on every feedback domain (RFC 5321 §4.5.1, RFC 2142).
ROLE_MAILBOXES = frozenset({"postmaster", "abuse"})
MAX_LOCAL_OCTETS = 64  # RFC 5321 §4.5.3.1.1


@dataclass(frozen=True)
class FeedbackMailboxes:
    """What the feedback listener accepts at RCPT (see :func:`accepted_recipient`)."""

    domains: frozenset[str]  # lower-case feedback domains
    mailboxes: frozenset[str] = frozenset()  # configured FBL mailboxes, "local@domain", lower-case
    secrets: tuple[bytes, ...] = ()  # return-path keys (current first): a return path must verify

    @classmethod
    def build(cls, domains: Sequence[str], mailboxes: Sequence[str] = (),
              secrets: Sequence[bytes] = ()) -> FeedbackMailboxes:
        """``mailboxes`` as in ``feedback.mailboxes``: ``"fbl"`` (on every domain) or ``"fbl@DOMAIN"``."""
        doms = frozenset(d.lower() for d in domains)
        boxes: set[str] = set()
        for m in mailboxes:
            m = m.strip().lower()
            boxes.update([m] if "@" in m else (f"{m}@{d}" for d in doms))
        return cls(doms, frozenset(boxes), tuple(s for s in secrets if s))


def accepted_recipient(accept: FeedbackMailboxes, address: str) -> bool:
    """THE rule for RCPT on the feedback listener: one of our domains, a plain local part of at
    most 64 octets without source routing, and a mailbox we issued (a verified return path) or
    publish (postmaster, abuse, the configured FBL mailboxes)."""
    local, at, domain = address.rpartition("@")
    domain = domain.lower()
    if not at or domain not in accept.domains:
        return False
    if len(local.encode("utf-8", "surrogateescape")) > MAX_LOCAL_OCTETS or "%" in local or "!" in local:
        return False
    if not _DOT_ATOM.match(local):
        return False
    lower = local.lower()
    if lower in ROLE_MAILBOXES or f"{lower}@{domain}" in accept.mailboxes:
        return True
    return bool(accept.secrets) and verp.decode(address, accept.secrets) is not None


@dataclass
class FeedbackServices:
    accept: FeedbackMailboxes
    inbox: FeedbackStore
    process: Callable[[str, bytes, tuple[str, ...]], Coroutine[Any, Any, None]]  # (inbox id, raw, rcpts)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Also accepted, apart from the feedback rules above: the unsubscribe mailboxes of our
    # List-Unsubscribe headers (relay/tokens.py; checked by their signature).
    unsubscribe_mailbox: Callable[[str], bool] = field(default=lambda _address: False)


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
        if not accepted_recipient(self.s.accept, recipient) and not self._unsubscribe_mailbox(recipient):
            return R_NO_MAILBOX
        self.rcpts.append(recipient)
        return R_OK_RCPT

    def _unsubscribe_mailbox(self, recipient: str) -> bool:
        domain = recipient.rpartition("@")[2].lower()
        return domain in self.s.accept.domains and self.s.unsubscribe_mailbox(recipient)

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
