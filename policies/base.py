"""The vocabulary every policy unit shares: context in, verdict out, one read port.

What it does: defines :class:`RecipientContext` (what a policy may look at), :class:`Verdict`
(what it answers), the :class:`Policy` protocol each unit implements, and :class:`SuppressionIndex`,
the only way policies read the suppression lists.

Guarantees: verdicts are values (frozen), never exceptions; a REJECT always carries status INVALID,
a sub-status and one of the exact reason texts of ``policies/reasons.py``.

Must never: import anything outside ``policies`` except ``storage.records``; know about SMTP
reply codes (``relay/smtp/replies.py`` maps verdicts to the wire).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from policies.address import Address
from storage.records import Status, SubStatus, SuppressionHits


class Decision(Enum):
    """Postfix's DUNNO / OK / REJECT, Haraka's CONT / OK / DENY."""

    CONTINUE = "continue"  # no opinion: ask the next policy
    ALLOW = "allow"  # accept now and skip every later policy (no-interception)
    REJECT = "reject"  # intercept: 5xx and an INVALID status record


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    policy: str  # name of the deciding policy; "" for CONTINUE
    status: Status | None
    sub_status: SubStatus | None
    reason: str | None  # one of policies.reasons, byte for byte
    detail: str | None  # extra human text (format errors only)

    @classmethod
    def cont(cls) -> Verdict:
        return _CONTINUE  # immutable and field-less: one object serves every policy and recipient

    @classmethod
    def allow(cls, policy: str) -> Verdict:
        return cls(Decision.ALLOW, policy, None, None, None, None)

    @classmethod
    def reject(cls, policy: str, sub_status: SubStatus, reason: str, detail: str | None = None) -> Verdict:
        return cls(Decision.REJECT, policy, Status.INVALID, sub_status, reason, detail)

    @property
    def rejected(self) -> bool:
        return self.decision is Decision.REJECT


_CONTINUE = Verdict(Decision.CONTINUE, "", None, None, None, None)


@dataclass(frozen=True, slots=True)
class RecipientContext:
    """One recipient of one transaction, as submitted (nothing parsed yet)."""

    account_id: int
    api_user: str
    sender: str
    raw_recipient: str  # the RCPT TO path as the client sent it
    smtputf8: bool  # the client declared SMTPUTF8 on MAIL FROM (RFC 6531)
    now: datetime  # timezone-aware; bounce-list expiry is compared against it


class SuppressionIndex(Protocol):
    """Read port onto the five suppression lists; ``storage``'s SuppressionRepo satisfies it."""

    async def hits(
        self, account_id: int, api_user: str, address: str, domain: str, now: datetime
    ) -> SuppressionHits:
        """All five lists for one recipient in ONE round trip (lower-cased address and domain)."""
        ...


class Policy(Protocol):
    """One decision unit. ``decide`` is pure: everything it needs is in its arguments."""

    @property
    def name(self) -> str: ...

    def decide(self, ctx: RecipientContext, address: Address, hits: SuppressionHits) -> Verdict: ...
