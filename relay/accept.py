"""The accept sequence every way of submitting mail shares: SMTP (``relay/smtp/submission.py``)
and the HTTP send API (``relay/http/send.py``).

:class:`Acceptor` holds what both need and does the steps both take, so a message is treated
alike whichever way it came in:

- the per-API_USER rate limit (``relay/rates.py``) and the free-space reserve
  (``relay/diskspace.py``);
- each recipient through the suppression chain (``policies/``): a refusal is logged, counted and
  kept as an INVALID outcome with the chain's reason, byte for byte;
- the header block through :func:`relay.headers.process_headers` (label and type headers read and
  removed, a Message-ID added from our host name when there is none) behind our ``Received:``;
- the status record, then :meth:`relay.intake.Intake.accept` (the spool's fsync before the
  caller answers), the disk debit, the accepted counter and the ``accepted`` log line.

The callers only translate: SMTP replies there, HTTP answers here.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from policies import Decision, PolicyChain, RecipientContext, Verdict
from relay.config import SubmissionConfig
from relay.diskspace import DiskGuard
from relay.headers import HeaderFacts, process_headers, received_header
from relay.intake import Accepting, IntakeError, IntakeFull
from relay.metrics import Metrics
from relay.rates import RateBudget
from relay.spool import Spool, SpoolWriter
from storage.records import (
    EmailType,
    MessageRecord,
    RecipientOutcome,
    Status,
    SubmissionRecord,
    utcnow,
)

log = logging.getLogger("mailrelay.submission")


class LookupFailed(Exception):
    """The suppression lists could not be read (the database is unavailable): try again later."""


@dataclass(frozen=True, slots=True)
class CheckedRecipient:
    address: str | None  # the normalised address when accepted
    key: str | None  # its de-duplication key when accepted
    refused: RecipientOutcome | None  # the INVALID outcome when refused
    verdict: Verdict | None = None  # the refusing verdict


class Committed(enum.Enum):
    OK = "ok"
    FULL = "full"  # no space left: 452 4.3.1 / HTTP 507
    FAILED = "failed"  # could not be made durable: 451 / HTTP 503


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who sends what to whom, once the recipients were checked."""

    email_id: str
    account_id: int
    api_user: str
    sender: str
    request_time: datetime
    client_ip: str
    accepted: tuple[str, ...]
    refused: tuple[RecipientOutcome, ...]


@dataclass(kw_only=True)
class Acceptor:
    """What every submission shares; built once by the composition root."""

    chain: PolicyChain
    intake: Accepting
    spool: Spool
    rate_limiter: RateBudget
    options: SubmissionConfig
    node: str
    hostname: str = ""  # for our Message-IDs and Received lines; empty: the node name
    max_message_size: int = 0  # bytes, as spooled (limits.max_message_size); 0: no limit
    metrics: Metrics = field(default_factory=Metrics)
    disk: DiskGuard | None = None  # the free-space reserve; None: no check
    lookup_failure_logged_at: float = float("-inf")  # monotonic time of the last logged traceback

    async def admits(self, size: int, recipients: int) -> bool:
        """Room for this message above the free-space reserve (``relay/diskspace.py``)?"""
        return self.disk is None or await self.disk.admits(size, recipients)

    async def check_recipient(self, ctx: RecipientContext, email_id: str, client_ip: str) -> CheckedRecipient:
        """The suppression chain's verdict on one recipient; raises :class:`LookupFailed`."""
        try:
            result = await self.chain.check(ctx)
        except Exception as exc:
            # An outage fails every recipient at once: one traceback per minute, a short line for the rest.
            now = time.monotonic()
            if now - self.lookup_failure_logged_at >= 60.0:
                self.lookup_failure_logged_at = now
                log.exception("suppression lookup failed", extra={"event": "rcpt_lookup_failed"})
            else:
                log.warning("suppression lookup failed: %s", exc.__class__.__name__,
                            extra={"event": "rcpt_lookup_failed", "error": str(exc)[:200]})
            raise LookupFailed(str(exc)) from exc
        v = result.verdict
        if v.decision is Decision.REJECT:
            reason = f"{v.reason}: {v.detail}" if v.detail else (v.reason or "")
            self.metrics.rcpt_refused(v.policy)
            log.info("refused", extra={"event": "refused", "email_id": email_id, "recipient": ctx.raw_recipient,
                                       "reason": reason, "policy": v.policy, "api_user": ctx.api_user,
                                       "client_ip": client_ip})
            outcome = RecipientOutcome(ctx.raw_recipient, Status.INVALID, v.sub_status, reason, rule=v.policy)
            return CheckedRecipient(None, None, outcome, v)
        assert result.address is not None
        return CheckedRecipient(result.address.address, result.address.key, None)

    def message_id_for(self, email_id: str, hostname: str | None = None) -> str:
        return f"<{email_id.lower()}@{hostname or self.hostname or self.node}>"

    def process_headers(self, block: bytes, email_id: str, hostname: str | None = None) -> tuple[bytes, HeaderFacts]:
        return process_headers(block, self.options.label_headers, self.options.type_headers,
                               self.message_id_for(email_id, hostname))

    def received(self, env: Envelope, *, helo: str | None, protocol: str, hostname: str | None = None) -> bytes:
        return received_header(helo=helo, peer_ip=env.client_ip, api_user=env.api_user,
                               hostname=hostname or self.hostname or self.node, protocol=protocol,
                               email_id=env.email_id, recipients=list(env.accepted), at=utcnow())

    def record(self, env: Envelope, *, subject: str, label: str | None, email_type: EmailType | None,
               size: int, accepted: bool, message_id: str | None = None,
               opt_out: tuple[str, ...] = (), custom_args: str | None = None) -> SubmissionRecord:
        msg = MessageRecord(
            email_id=env.email_id, account_id=env.account_id, api_user=env.api_user, sender=env.sender,
            subject=subject, label=label, email_type=email_type, size=size, request_time=env.request_time,
            request_ip=env.client_ip, node=self.node, message_id=message_id, opt_out=opt_out,
            custom_args=custom_args,
        )
        outcomes = [RecipientOutcome(r, Status.SENDING) for r in env.accepted] if accepted else []
        return SubmissionRecord(msg, tuple(outcomes + list(env.refused)))

    async def commit(self, writer: SpoolWriter, record: SubmissionRecord, refused: int) -> Committed:
        """Make the message durable (fsync) and hand it on; the caller answers after this."""
        try:
            await self.intake.accept(writer, record)
        except IntakeFull:
            return Committed.FULL
        except IntakeError:
            return Committed.FAILED
        if self.disk is not None:
            self.disk.debit(writer.size)
        msg = record.message
        self.metrics.message_accepted(msg.api_user)
        accepted = len(record.recipients) - refused
        log.info("accepted", extra={"event": "accepted", "email_id": msg.email_id, "api_user": msg.api_user,
                                    "sender": msg.sender, "recipients": accepted, "refused": refused,
                                    "size": msg.size, "client_ip": msg.request_ip, "message_id": msg.message_id})
        return Committed.OK
