"""``parse(raw) -> FeedbackReport``: the single entry point of the feedback parsers.

What it does: reads the mail once (:mod:`relay.feedback.mime`), then asks the parsers in order —
ARF complaint (RFC 5965), DSN (RFC 3464), auto-reply (RFC 3834, not a bounce), non-standard
bounce — and classifies each failed recipient into a soft-bounce category
(:class:`~relay.feedback.classify.BounceClassifier`). The first parser that says "mine" wins
(KumoMTA: parsers return None for "not mine").

Guarantees: NEVER raises, whatever the bytes; bounded time and memory (the MIME layer caps the
bytes, parts and depth it examines). Anything not recognised is ``kind="unknown"`` with a
``reason`` for the quarantine — never dropped. No I/O except loading the rules once.
"""

from __future__ import annotations

import re
from dataclasses import replace
from threading import Lock

from relay.feedback.arf import parse_arf
from relay.feedback.autoreply import is_autoreply
from relay.feedback.classify import BounceClassifier
from relay.feedback.dsn import parse_dsn
from relay.feedback.mime import Mail, load
from relay.feedback.nonstandard import NonStandardResult, parse_nonstandard, parse_ses
from relay.feedback.notice import split_notice
from relay.feedback.report import FeedbackReport, RecipientReport
from relay.feedback.scan import clean_address, find_addresses, one_line

__all__ = ["default_classifier", "parse"]

_VERP_LIKE = re.compile(r"^b-[0-9a-z]{26}-", re.I)
_lock = Lock()
_default: BounceClassifier | None = None
MAX_ORIGINAL_HEADERS = 100


def default_classifier() -> BounceClassifier:
    """The packaged rules, loaded (and validated) once per process."""
    global _default
    with _lock:
        if _default is None:
            _default = BounceClassifier.load()
        return _default


def parse(raw: bytes, classifier: BounceClassifier | None = None) -> FeedbackReport:
    """Parse one received feedback mail; never raises."""
    try:
        if not raw or not bytes(raw[:65536]).strip():
            return FeedbackReport(kind="unknown", reason="empty message")
        return _parse(raw, classifier or default_classifier())
    except RecursionError:
        return FeedbackReport(kind="unknown", reason="message structure too deep")
    except MemoryError:
        return FeedbackReport(kind="unknown", reason="message too large to examine")
    except Exception as exc:  # the contract is "never raises": quarantine instead
        return FeedbackReport(kind="unknown", reason=f"parser error: {type(exc).__name__}: {one_line(str(exc), 200)}")


def _bounce_to(mail: Mail) -> str | None:
    found: list[str] = []
    for name in ("Delivered-To", "X-Original-To", "To", "Envelope-To", "X-Envelope-To"):
        for value in mail.all_headers(name):
            found.extend(find_addresses(value))
    for addr in found:
        if _VERP_LIKE.match(addr):
            return addr
    return found[0] if found else None


def _dropped(mail: Mail, reported: int = 0, total: int = 0) -> tuple[str, ...]:
    notes = list(mail.dropped)
    if total > reported:
        notes.append(f"recipients: {reported} of {total} reported")
    return tuple(notes)


def _common(mail: Mail) -> dict[str, object]:
    message_id = mail.returned("Message-ID") or mail.returned("Message-Id")
    sender = clean_address(mail.returned("Return-Path")) or clean_address(mail.returned("From"))
    return {
        "original_message_id": message_id.strip() if message_id else None,
        "original_headers": mail.returned_headers[:MAX_ORIGINAL_HEADERS],
        "original_sender": sender,
        "bounce_to": _bounce_to(mail),
        "dropped": _dropped(mail),
    }


def _classify(rows: tuple[RecipientReport, ...] | list[RecipientReport], classifier: BounceClassifier,
              context: str) -> tuple[RecipientReport, ...]:
    out: list[RecipientReport] = []
    single = len(rows) == 1
    for row in rows:
        if row.action in ("delivered", "relayed", "expanded") or (row.status or "").startswith("2."):
            out.append(row)
            continue
        verdict = classifier.classify(row.diagnostic, row.smtp_code, row.status, row.action, row.command,
                                      context=context if single else "")
        out.append(replace(row, category=verdict.category, rule=verdict.rule, fallback=verdict.fallback))
    # failed rows first: callers that read one row (first()) get a failure, not a success
    out.sort(key=lambda r: r.category is None)
    return tuple(out)


def _other(mail: Mail, other: NonStandardResult, classifier: BounceClassifier,
           common: dict[str, object]) -> FeedbackReport:
    common["dropped"] = _dropped(mail, len(other.rows), other.recipients_total)
    if other.complaint_type is not None:
        return FeedbackReport(kind="arf", recipients=other.rows, feedback_type=other.complaint_type,
                              format=other.format, **common)  # type: ignore[arg-type]
    if other.delivery_success:
        return FeedbackReport(kind="dsn", recipients=other.rows, is_delivery_success=True, format=other.format,
                              **common)  # type: ignore[arg-type]
    return FeedbackReport(kind="dsn", recipients=_classify(other.rows, classifier, other.notice),
                          format=other.format, **common)  # type: ignore[arg-type]


def _parse(raw: bytes, classifier: BounceClassifier) -> FeedbackReport:
    mail = load(raw)
    common = _common(mail)

    arf = parse_arf(mail)
    if arf is not None:
        if arf.original_sender:
            common["original_sender"] = arf.original_sender
        return FeedbackReport(kind="arf", recipients=arf.rows, feedback_type=arf.feedback_type,
                              format=arf.format, reporting_mta=arf.reporting_mta,
                              reason="" if arf.rows else "complaint without a recipient", **common)  # type: ignore[arg-type]

    ses = parse_ses(mail)
    if ses is not None:
        return _other(mail, ses, classifier, common)

    dsn = parse_dsn(mail)
    if dsn is not None:
        common["dropped"] = _dropped(mail, len(dsn.rows), dsn.recipients_total)
        if dsn.delivery_success:
            return FeedbackReport(kind="dsn", recipients=tuple(dsn.rows), is_delivery_success=True, format="rfc3464",
                                  reporting_mta=dsn.reporting_mta, **common)  # type: ignore[arg-type]
        context = one_line(split_notice(mail.plain_text)[0], 4000)
        return FeedbackReport(kind="dsn", recipients=_classify(dsn.rows, classifier, context), format="rfc3464",
                              reporting_mta=dsn.reporting_mta, **common)  # type: ignore[arg-type]

    if is_autoreply(mail):
        # The auto-replier is (usually) the recipient of our message: reported, never classified.
        who = clean_address(mail.header("From"))
        rows = (RecipientReport(recipient=who, diagnostic=one_line(mail.header("Subject") or "", 300)),) if who else ()
        return FeedbackReport(kind="unknown", recipients=rows, is_autoreply=True,
                              reason="auto-reply (RFC 3834), not a bounce", format="autoreply",
                              **common)  # type: ignore[arg-type]

    other = parse_nonstandard(mail)
    if other is not None:
        return _other(mail, other, classifier, common)

    reason = mail.error or ("no delivery-status, feedback-report or bounce notice found"
                            if mail.headers else "not a mail message (no headers)")
    return FeedbackReport(kind="unknown", reason=reason, **common)  # type: ignore[arg-type]
