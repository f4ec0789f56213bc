"""SubmissionHandler: the thin adapter between the SMTP engine and our services.

One instance per connection. It owns the transaction (sender, recipients, refused recipients)
and turns each SMTP event into a call on a service:

- AUTH  → :class:`relay.smtp.auth.ApiUserAuthenticator`
- MAIL  → the session's API_USER re-checked (revoked or key replaced since AUTH: 421, close);
          per-API_USER rate limit; the email_id is allocated here
- RCPT  → ``policies.PolicyChain.check`` (one storage round trip); a refused recipient is kept
          and recorded as INVALID with its reason when the transaction ends
- DATA  → :class:`IntakeSink`: our ``Received:`` prepended, label/type headers stripped, content
          streamed to the spool, then :meth:`relay.intake.Intake.accept`; the 250 names the email_id

It decides nothing itself beyond sequencing: reply texts live in ``replies.py``, policy order in
``policies/chain.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from policies import FormatError, RecipientContext, parse_address
from relay.accept import Acceptor, Committed, Envelope, LookupFailed
from relay.headers import find_header_end, with_protocol
from relay.ids import new_email_id
from relay.smtp import replies
from relay.smtp.auth import ApiUserAuthenticator
from relay.smtp.engine import R_TOO_MANY_CONN, AuthReply, DataSink, SessionInfo
from relay.spool import SpoolFull, SpoolWriter
from storage.records import (
    ApiUser,
    EmailType,
    RecipientOutcome,
    SubmissionRecord,
    utcnow,
)

log = logging.getLogger("mailrelay.submission")


class NodeConnections(Protocol):
    """Connections per client IP counted across every intake process of the node (the owner's
    count, ``relay/workers``); without it each listener's own gate counts (one process)."""

    async def acquire(self, listener: str, ip: str) -> bool: ...

    def release(self, listener: str, ip: str) -> None: ...


@dataclass(kw_only=True)
class SubmissionServices(Acceptor):
    """What every session shares (the accept sequence of ``relay/accept.py`` plus SMTP AUTH);
    built once by the composition root."""

    authenticator: ApiUserAuthenticator
    connections: NodeConnections | None = None


@dataclass
class Transaction:
    email_id: str
    sender: str
    smtputf8: bool
    request_time: datetime
    started: float = field(default_factory=time.monotonic)  # for the transaction-time histogram
    accepted: list[str] = field(default_factory=list)
    accepted_keys: set[str] = field(default_factory=set)
    refused: list[RecipientOutcome] = field(default_factory=list)


class SubmissionHandler:
    def __init__(self, services: SubmissionServices) -> None:
        self.s = services
        self.tx: Transaction | None = None
        self.auth_failures = 0
        self.counted = False  # this connection is counted by the node's connection gate

    # region session
    async def on_connect(self, session: SessionInfo) -> str | None:
        connections = self.s.connections
        if connections is not None:
            if not await connections.acquire(session.listener, session.peer_ip):
                return R_TOO_MANY_CONN
            self.counted = True
        return None

    async def authenticate(self, session: SessionInfo, mechanism: str, login: bytes, password: bytes) -> AuthReply:
        d = await self.s.authenticator.authenticate(session.peer_ip, self.auth_failures, login, password)
        if not d.ok:
            self.auth_failures += 1
        return AuthReply(ok=d.ok, reply=d.reply, principal=d.principal, close=d.close)

    async def on_disconnect(self, session: SessionInfo) -> None:
        if self.counted and self.s.connections is not None:
            self.counted = False
            self.s.connections.release(session.listener, session.peer_ip)

    # endregion

    async def admits(self, size: int, recipients: int) -> bool:
        return await self.s.admits(size, recipients)

    def _user(self, session: SessionInfo) -> ApiUser | None:
        p = session.principal
        return p if isinstance(p, ApiUser) else None

    async def on_mail(self, session: SessionInfo, sender: str, params: dict[str, str | bool]) -> str:
        user = self._user(session)
        if user is None:
            return replies.NOT_AUTHENTICATED
        smtputf8 = bool(params.get("SMTPUTF8"))
        if sender:
            parsed = parse_address(sender, smtputf8)
            if isinstance(parsed, FormatError):
                return replies.SENDER_SYNTAX + parsed.detail
        # The rate token is asked for while the credentials are re-read: with intake workers each is
        # a wait on another thread or process, and one after the other they doubled MAIL's latency.
        # A token taken for a MAIL refused for its credentials (or abandoned) is given back.
        rate = asyncio.ensure_future(self.s.rate_limiter.acquire(user.name))
        valid = False
        try:
            valid = await self.s.authenticator.still_valid(user)
        except Exception:
            log.exception("credentials re-check failed", extra={"event": "auth_storage_error", "api_user": user.name})
            return replies.CREDENTIALS_CHECK_FAILED
        finally:
            if not valid:  # leaving without the token: refund it once it is known to be taken
                rate.add_done_callback(lambda t: self._refund(t, user.name))
        if not valid:
            log.warning("session credentials revoked or replaced", extra={
                "event": "auth_revoked_session", "api_user": user.name, "ip": session.peer_ip})
            return replies.CREDENTIALS_GONE
        if not await rate:
            return replies.RATE_LIMITED
        size = params.get("SIZE")
        if not await self.admits(int(size) if isinstance(size, str) and size.isdigit() else 0, 0):
            return replies.INSUFFICIENT_STORAGE
        self.tx = Transaction(new_email_id(), sender, smtputf8, utcnow())
        return replies.MAIL_OK

    def _refund(self, rate: asyncio.Future[bool], api_user: str) -> None:
        if not rate.cancelled() and rate.exception() is None and rate.result():
            self.s.rate_limiter.refund(api_user)

    async def on_rcpt(self, session: SessionInfo, recipient: str, params: dict[str, str | bool]) -> str:
        user = self._user(session)
        tx = self.tx
        if user is None or tx is None:
            return "503 5.5.1 Need MAIL command"
        ctx = RecipientContext(
            account_id=user.account_id,
            api_user=user.name,
            sender=tx.sender,
            raw_recipient=recipient,
            smtputf8=tx.smtputf8,
            now=utcnow(),
        )
        try:
            checked = await self.s.check_recipient(ctx, tx.email_id, session.peer_ip)
        except LookupFailed:
            return replies.LOOKUP_FAILED
        if checked.refused is not None and checked.verdict is not None:
            tx.refused.append(checked.refused)
            return replies.for_verdict(checked.verdict)
        assert checked.address is not None and checked.key is not None
        if checked.key not in tx.accepted_keys:
            tx.accepted_keys.add(checked.key)
            tx.accepted.append(checked.address)
        return replies.RCPT_OK

    async def on_data(self, session: SessionInfo) -> DataSink | str:
        tx = self.tx
        user = self._user(session)
        if tx is None or user is None or not tx.accepted:
            return replies.NO_VALID_RECIPIENTS
        return IntakeSink(self, session, user, tx, self.s.spool.new_writer(tx.email_id))

    async def on_reset(self, session: SessionInfo) -> None:
        """The transaction ended without a completed DATA: record the refused recipients."""
        tx, self.tx = self.tx, None
        user = self._user(session)
        if tx is None or user is None or not tx.refused:
            return
        record = self._record(session, user, tx, subject="", label=None, email_type=None, size=0,
                              accepted=False)
        try:
            await self.s.intake.record_intercepted(record)
        except Exception:
            log.exception("could not record refused recipients", extra={"event": "intercept_record_failed",
                                                                         "email_id": tx.email_id})

    def _record(
        self, session: SessionInfo, user: ApiUser, tx: Transaction, *, subject: str,
        label: str | None, email_type: EmailType | None, size: int, accepted: bool,
        message_id: str | None = None, opt_out: tuple[str, ...] = (), custom_args: str | None = None,
    ) -> SubmissionRecord:
        return self.s.record(_envelope(session, user, tx), subject=subject, label=label, email_type=email_type,
                             size=size, accepted=accepted, message_id=message_id, opt_out=opt_out,
                             custom_args=custom_args)

    def _finished(self) -> None:
        self.tx = None


def _envelope(session: SessionInfo, user: ApiUser, tx: Transaction) -> Envelope:
    return Envelope(tx.email_id, user.account_id, user.name, tx.sender, tx.request_time, session.peer_ip,
                    tuple(tx.accepted), tuple(tx.refused))


class IntakeSink:
    """Receives the unstuffed DATA stream: header scan, then straight to the spool writer."""

    def __init__(
        self, handler: SubmissionHandler, session: SessionInfo, user: ApiUser, tx: Transaction,
        writer: SpoolWriter,
    ) -> None:
        self.h = handler
        self.session = session
        self.user = user
        self.tx = tx
        self.writer = writer
        self.opts = handler.s.options
        self.head: bytearray | None = bytearray()  # None once the header block was processed
        self.subject = ""
        self.message_id: str | None = None
        self.label: str | None = None
        self.email_type: EmailType | None = None
        self.type_error: str | None = None
        self.opt_out: tuple[str, ...] = ()
        self.custom_args: str | None = None
        self.custom_args_error: str | None = None
        self.no_space = False  # the message would cross the free-space reserve, or the disk was full

    def _received(self) -> bytes:
        s = self.session
        return self.h.s.received(
            _envelope(s, self.user, self.tx), helo=s.helo, hostname=s.hostname,
            protocol=with_protocol(esmtp=s.esmtp, tls=s.tls, authenticated=s.authenticated, smtputf8=self.tx.smtputf8),
        )

    async def _flush_headers(self, end: int) -> None:
        assert self.head is not None
        block, rest = bytes(self.head[:end]), bytes(self.head[end:])
        self.head = None
        filtered, facts = self.h.s.process_headers(block, self.tx.email_id, self.session.hostname or self.h.s.node)
        self.subject, self.label, self.message_id = facts.subject, facts.label, facts.message_id
        self.email_type, self.type_error = facts.email_type, facts.type_error
        self.opt_out = facts.opt_out
        self.custom_args, self.custom_args_error = facts.custom_args, facts.custom_args_error
        await self.writer.write(self._received() + filtered)
        if rest:
            await self.writer.write(rest)

    async def _store(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run a step that writes to the spool; a full disk (or a message that would cross the
        free-space reserve) discards what was stored: the rest of DATA is read, then 452."""
        if self.no_space:
            return
        try:
            await step()
            if not await self.h.admits(self.writer.size, len(self.tx.accepted)):
                raise SpoolFull("the message would cross the free-space reserve")
        except SpoolFull:
            self.no_space = True
            await self.writer.discard()

    async def write(self, chunk: bytes) -> None:
        await self._store(lambda: self._write(chunk))

    async def _write(self, chunk: bytes) -> None:
        if self.head is None:
            await self.writer.write(chunk)
            return
        self.head += chunk
        end = find_header_end(self.head)
        if end >= 0:
            await self._flush_headers(end)
        elif len(self.head) > self.opts.max_header_bytes:
            # No end of headers in sight: pass it through untouched rather than hold it in memory.
            data, self.head = bytes(self.head), None
            await self.writer.write(self._received() + data)

    async def finish(self) -> str:
        head = self.head
        if head is not None:  # a header block without its end
            await self._store(lambda: self._flush_headers(len(head)))
        if self.no_space:
            self.h._finished()
            return replies.INSUFFICIENT_STORAGE
        if self.type_error is not None:
            await self.writer.discard()
            await self.h.on_reset(self.session)  # records the refused recipients, ends the transaction
            return replies.BAD_EMAIL_TYPE
        if self.custom_args_error is not None:
            await self.writer.discard()
            await self.h.on_reset(self.session)
            return replies.BAD_CUSTOM_ARGS + self.custom_args_error
        record = self.h._record(
            self.session, self.user, self.tx, subject=self.subject, label=self.label,
            email_type=self.email_type, size=self.writer.size, accepted=True, message_id=self.message_id,
            opt_out=self.opt_out, custom_args=self.custom_args,
        )
        s = self.h.s
        committed = await s.commit(self.writer, record, len(self.tx.refused))
        self.h._finished()
        s.metrics.smtp_transaction.observe(time.monotonic() - self.tx.started)
        if committed is Committed.FULL:
            return replies.INSUFFICIENT_STORAGE
        if committed is Committed.FAILED:
            return replies.STORE_FAILED
        return replies.queued(self.tx.email_id)

    async def abort(self, reason: str) -> None:
        await self.writer.discard()
