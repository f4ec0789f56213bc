"""RFC 5965 Abuse Reporting Format (feedback-loop complaints) -> :class:`ArfResult`, or None.

What it does: recognises ``multipart/report; report-type=feedback-report`` (or any
``message/feedback-report`` part) and Microsoft's JMRP/SNDS complaint mail (a forwarded
``message/rfc822`` carrying ``X-HmXmrOriginalRecipient``). The complained-about recipient comes
from, in order: ``Original-Rcpt-To``, the returned message's ``To``, Microsoft's
``X-HmXmrOriginalRecipient``, and ``Removal-Recipient`` (RFC 6650 opt-out reports).

Guarantees: never raises; None means "not an ARF report". Rows carry no category (a complaint is
its own class, SPEC §6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.feedback.dsn import parse_fields
from relay.feedback.mime import Mail
from relay.feedback.report import RecipientReport
from relay.feedback.scan import clean_address, one_line

__all__ = ["ArfResult", "parse_arf"]

_MS_COMPLAINT = re.compile(r"complaint about message from", re.I)


@dataclass(frozen=True, slots=True)
class ArfResult:
    rows: tuple[RecipientReport, ...]
    feedback_type: str
    original_sender: str | None
    reporting_mta: str | None
    format: str  # "arf" | "microsoft-jmrp"


def parse_arf(mail: Mail) -> ArfResult | None:
    if mail.feedback_reports or mail.report_type == "feedback-report":
        return _standard(mail)
    if mail.has_returned and (mail.returned("X-HmXmrOriginalRecipient") or (
            _MS_COMPLAINT.search(mail.header("Subject") or "") and "hotmail" in (mail.header("From") or "").lower())):
        return _microsoft(mail)
    return None


def _standard(mail: Mail) -> ArfResult:
    fields: dict[str, str] = {}
    for text in mail.feedback_reports:
        msg_fields, groups = parse_fields(text)
        for k, v in msg_fields.items():
            fields.setdefault(k, v)
        for g in groups:
            for k, v in g.items():
                fields.setdefault(k, v)
    if not mail.feedback_reports:  # report-type says feedback-report but the part is text
        msg_fields, _ = parse_fields(mail.plain_text)
        fields.update({k: v for k, v in msg_fields.items() if k not in fields})
    feedback_type = (fields.get("feedback-type") or "abuse").split()[0].lower() if fields.get(
        "feedback-type", "").strip() else "abuse"
    original_rcpt = clean_address(fields.get("original-rcpt-to"))
    recipient = (original_rcpt or clean_address(mail.returned("To"))
                 or clean_address(mail.returned("X-HmXmrOriginalRecipient"))
                 or clean_address(fields.get("removal-recipient")))
    diagnostic = one_line(mail.plain_text, 500)
    rows: tuple[RecipientReport, ...] = ()
    if recipient:
        rows = (RecipientReport(recipient=recipient, original_recipient=original_rcpt, diagnostic=diagnostic,
                                rule=f"arf-{feedback_type}"),)
    sender = clean_address(fields.get("original-mail-from")) or clean_address(mail.returned("Return-Path")) \
        or clean_address(mail.returned("From"))
    reporting = fields.get("reporting-mta")
    return ArfResult(rows=rows, feedback_type=feedback_type, original_sender=sender,
                     reporting_mta=reporting.split(";")[-1].strip() if reporting else None, format="arf")


def _microsoft(mail: Mail) -> ArfResult:
    recipient = clean_address(mail.returned("X-HmXmrOriginalRecipient")) or clean_address(mail.returned("To"))
    rows: tuple[RecipientReport, ...] = ()
    if recipient:
        rows = (RecipientReport(recipient=recipient, diagnostic=one_line(mail.header("Subject") or "", 500),
                                rule="arf-microsoft"),)
    sender = clean_address(mail.returned("Return-Path")) or clean_address(mail.returned("From"))
    return ArfResult(rows=rows, feedback_type="abuse", original_sender=sender, reporting_mta=None,
                     format="microsoft-jmrp")
