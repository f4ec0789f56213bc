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

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from policies import Decision, FormatError, PolicyChain, RecipientContext, parse_address
from relay.config import SubmissionConfig
from relay.diskspace import DiskGuard
from relay.headers import find_header_end, process_headers, received_header, with_protocol
from relay.ids import new_email_id
from relay.intake import Intake, IntakeError, IntakeFull
from relay.metrics import Metrics
from relay.smtp import replies
from relay.smtp.auth import ApiUserAuthenticator
from relay.smtp.engine import AuthReply, DataSink, SessionInfo
from relay.smtp.limits import MessageRateLimiter
from relay.spool import Spool, SpoolFull, SpoolWriter
from storage.records import (
    ApiUser,
    EmailType,
    MessageRecord,
    RecipientOutcome,
    Status,
    SubmissionRecord,
    utcnow,
)

log = logging.getLogger("mailrelay.submission")


@dataclass
class SubmissionServices:
    """What every session shares; built once by the composition root."""

    authenticator: ApiUserAuthenticator
    chain: PolicyChain
    intake: Intake
    spool: Spool
    rate_limiter: MessageRateLimiter
    options: SubmissionConfig
    node: str
    metrics: Metrics = field(default_factory=Metrics)
    disk: DiskGuard | None = None  # the free-space reserve; None: no check
    lookup_failure_logged_at: float = float("-inf")  # monotonic time of the last logged traceback


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

    # region session
    async def on_connect(self, session: SessionInfo) -> str | None:
        return None

    async def authenticate(self, session: SessionInfo, mechanism: str, login: bytes, password: bytes) -> AuthReply:
        d = await self.s.authenticator.authenticate(session.peer_ip, self.auth_failures, login, password)
        if not d.ok:
            self.auth_failures += 1
        return AuthReply(ok=d.ok, reply=d.reply, principal=d.principal, close=d.close)

    async def on_disconnect(self, session: SessionInfo) -> None:
        return None

    # endregion

    async def admits(self, size: int, recipients: int) -> bool:
        """Room for this message above the free-space reserve (``relay/diskspace.py``)?"""
        return self.s.disk is None or await self.s.disk.admits(size, recipients)

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
        try:
            valid = await self.s.authenticator.still_valid(user)
        except Exception:
            log.exception("credentials re-check failed", extra={"event": "auth_storage_error", "api_user": user.name})
            return replies.CREDENTIALS_CHECK_FAILED
        if not valid:
            log.warning("session credentials revoked or replaced", extra={
                "event": "auth_revoked_session", "api_user": user.name, "ip": session.peer_ip})
            return replies.CREDENTIALS_GONE
        if not self.s.rate_limiter.allow(user.name):
            return replies.RATE_LIMITED
        size = params.get("SIZE")
        if not await self.admits(int(size) if isinstance(size, str) and size.isdigit() else 0, 0):
            return replies.INSUFFICIENT_STORAGE
        self.tx = Transaction(new_email_id(), sender, smtputf8, utcnow())
        return replies.MAIL_OK

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
            result = await self.s.chain.check(ctx)
        except Exception as exc:
            # An outage fails every RCPT at once: one traceback per minute, a short line for the rest.
            now = time.monotonic()
            if now - self.s.lookup_failure_logged_at >= 60.0:
                self.s.lookup_failure_logged_at = now
                log.exception("suppression lookup failed", extra={"event": "rcpt_lookup_failed"})
            else:
                log.warning("suppression lookup failed: %s", exc.__class__.__name__,
                            extra={"event": "rcpt_lookup_failed", "error": str(exc)[:200]})
            return replies.LOOKUP_FAILED
        v = result.verdict
        if v.decision is Decision.REJECT:
            reason = f"{v.reason}: {v.detail}" if v.detail else (v.reason or "")
            tx.refused.append(
                RecipientOutcome(recipient, Status.INVALID, v.sub_status, reason, rule=v.policy)
            )
            self.s.metrics.rcpt_refused(v.policy)
            log.info("refused", extra={"event": "refused", "email_id": tx.email_id, "recipient": recipient,
                                       "reason": reason, "policy": v.policy, "api_user": user.name,
                                       "client_ip": session.peer_ip})
            return replies.for_verdict(v)
        assert result.address is not None
        addr = result.address
        if addr.key not in tx.accepted_keys:
            tx.accepted_keys.add(addr.key)
            tx.accepted.append(addr.address)
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
        message_id: str | None = None, opt_out: tuple[str, ...] = (),
    ) -> SubmissionRecord:
        msg = MessageRecord(
            email_id=tx.email_id,
            account_id=user.account_id,
            api_user=user.name,
            sender=tx.sender,
            subject=subject,
            label=label,
            email_type=email_type,
            size=size,
            request_time=tx.request_time,
            request_ip=session.peer_ip,
            node=self.s.node,
            message_id=message_id,
            opt_out=opt_out,
        )
        outcomes = [RecipientOutcome(r, Status.SENDING) for r in tx.accepted] if accepted else []
        return SubmissionRecord(msg, tuple(outcomes + tx.refused))

    def _finished(self) -> None:
        self.tx = None


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
        self.no_space = False  # the message would cross the free-space reserve, or the disk was full

    def _received(self) -> bytes:
        s = self.session
        return received_header(
            helo=s.helo, peer_ip=s.peer_ip, api_user=self.user.name, hostname=s.hostname,
            protocol=with_protocol(esmtp=s.esmtp, tls=s.tls, authenticated=s.authenticated, smtputf8=self.tx.smtputf8),
            email_id=self.tx.email_id, recipients=self.tx.accepted, at=utcnow(),
        )

    async def _flush_headers(self, end: int) -> None:
        assert self.head is not None
        block, rest = bytes(self.head[:end]), bytes(self.head[end:])
        self.head = None
        default_id = f"<{self.tx.email_id.lower()}@{self.session.hostname or self.h.s.node}>"
        filtered, facts = process_headers(block, self.opts.label_headers, self.opts.type_headers, default_id)
        self.subject, self.label, self.message_id = facts.subject, facts.label, facts.message_id
        self.email_type, self.type_error = facts.email_type, facts.type_error
        self.opt_out = facts.opt_out
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
        record = self.h._record(
            self.session, self.user, self.tx, subject=self.subject, label=self.label,
            email_type=self.email_type, size=self.writer.size, accepted=True, message_id=self.message_id,
            opt_out=self.opt_out,
        )
        s = self.h.s
        try:
            await s.intake.accept(self.writer, record)
        except IntakeFull:
            self.h._finished()
            s.metrics.smtp_transaction.observe(time.monotonic() - self.tx.started)
            return replies.INSUFFICIENT_STORAGE
        except IntakeError:
            self.h._finished()
            s.metrics.smtp_transaction.observe(time.monotonic() - self.tx.started)
            return replies.STORE_FAILED
        if s.disk is not None:
            s.disk.debit(self.writer.size)
        self.h._finished()
        s.metrics.message_accepted(self.user.name)
        s.metrics.smtp_transaction.observe(time.monotonic() - self.tx.started)
        msg = record.message
        log.info("accepted", extra={"event": "accepted", "email_id": msg.email_id, "api_user": msg.api_user,
                                    "sender": msg.sender, "recipients": len(self.tx.accepted),
                                    "refused": len(self.tx.refused), "size": msg.size,
                                    "client_ip": msg.request_ip, "message_id": msg.message_id})
        return replies.queued(self.tx.email_id)

    async def abort(self, reason: str) -> None:
        await self.writer.discard()
