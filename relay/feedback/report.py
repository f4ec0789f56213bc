"""Typed results of the feedback parser: one :class:`FeedbackReport` per received mail.

What it holds: the kind of mail (RFC 3464 DSN or non-standard bounce -> ``"dsn"``, RFC 5965 ARF
complaint -> ``"arf"``, anything else -> ``"unknown"`` with a ``reason`` for the quarantine), one
:class:`RecipientReport` per failed / complained-about recipient, and what the matcher needs to
find the original message: the bounce mail's own recipient (``bounce_to``, our VERP return path),
the returned message's Message-ID and headers.

Guarantees: frozen values only, no I/O, no parsing here. ``first()`` never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from relay.rules.types import Category
from storage.records import SubStatus

__all__ = ["FeedbackClass", "FeedbackReport", "Kind", "RecipientReport", "first"]

Kind = Literal["dsn", "arf", "unknown"]
FeedbackClass = Literal["soft_bounce", "complaint"]


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One recipient of a bounce (per-recipient DSN fields) or the subject of a complaint."""

    recipient: str
    original_recipient: str | None = None  # DSN Original-Recipient / ARF Original-Rcpt-To
    action: str | None = None  # failed | delayed | delivered | relayed | expanded (lower-case)
    status: str | None = None  # RFC 3463 enhanced code, "5.1.1"
    smtp_code: int | None = None  # the remote server's reply code, 550
    diagnostic: str = ""  # the remote server's text / the bounce's explanation (one line)
    remote_mta: str | None = None
    category: Category | None = None  # soft-bounce category; None for complaints and successes
    rule: str = ""  # the classification rule that decided ``category``
    fallback: bool = False  # no phrase rule recognised it (the review loop keeps it)
    command: str | None = None  # SMTP command the failure answered (MAIL, RCPT, DATA), when known

    @property
    def sub_status(self) -> SubStatus | None:
        return self.category.soft_bounce_sub_status if self.category is not None else None


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    kind: Kind
    recipients: tuple[RecipientReport, ...] = ()
    reason: str = ""  # why the mail is "unknown" (quarantine), or "" when recognised
    original_message_id: str | None = None  # Message-ID of the returned/complained-about message
    original_headers: tuple[tuple[str, str], ...] = ()  # the returned message's headers (capped)
    original_sender: str | None = None  # ARF Original-Mail-From, or the returned Return-Path/From
    bounce_to: str | None = None  # who the bounce was sent to: our VERP return path, if intact
    feedback_type: str | None = None  # ARF Feedback-Type (abuse, fraud, opt-out, ...)
    is_autoreply: bool = False  # RFC 3834 auto-reply / vacation: not a bounce
    is_delivery_success: bool = False  # a DSN that reports only successful delivery/relay
    format: str = ""  # which parser recognised it ("rfc3464", "arf", "exim", "qmail", ...)
    reporting_mta: str | None = None
    dropped: tuple[str, ...] = ()  # what the parser's caps left out ("recipients: 500 of 10000 reported", ...)

    @property
    def truncated(self) -> bool:
        return bool(self.dropped)

    @property
    def feedback_class(self) -> FeedbackClass | None:
        """``soft_bounce`` for bounces, ``complaint`` for ARF, None for the rest (SPEC §4/§6)."""
        if self.kind == "arf":
            return "complaint"
        if self.kind == "dsn" and not self.is_delivery_success and self.recipients:
            return "soft_bounce"
        return None

    def original_header(self, name: str) -> str | None:
        """First value of a header of the returned message (case-insensitive name)."""
        lname = name.lower()
        for key, value in self.original_headers:
            if key.lower() == lname:
                return value
        return None


def first(report: FeedbackReport) -> RecipientReport | None:
    """The first recipient row (the one single-recipient callers and the CLI show), if any."""
    return report.recipients[0] if report.recipients else None
