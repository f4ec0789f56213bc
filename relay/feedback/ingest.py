"""FeedbackIngestor: a received bounce or complaint mail → status, send log, suppression lists.

1. Parse (in a worker thread: bounded CPU, never on the event loop).
2. Match to the original (message, recipient): the signed return path first (our VERP address is
   the bounce's envelope recipient, its To, or the returned message's Return-Path); a VERP-looking
   address whose signature does not verify changes nothing and is quarantined. Fallback: the
   returned message's Message-ID, then the report's recipient within that message.
3. Apply once (``feedback_seen`` keys), in ONE transaction with the seen mark
   (:meth:`SuppressionService.apply_feedback`): a DSN marks the recipient soft bounce (5) with its
   sub-status and a feedback event; "not exist" also enters the bounce list. An ARF report adds a
   complaint event and a complaint entry. The lists' expiries are the suppression service's.

Never raises: anything unusable is quarantined with the reason, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from policies import ListChange, SuppressionService, TencentRules
from relay import verp
from relay.feedback.inbox import FeedbackInbox
from relay.feedback.report import FeedbackReport, RecipientReport
from relay.metrics import Metrics
from relay.rules.review import ReviewRecorder
from relay.rules.types import Category, reply_text
from storage.protocols import Storage
from storage.records import FeedbackEffects, ListKind, LogEntry, LogKind, Status, StatusRecord, SubStatus, utcnow

log = logging.getLogger("mailrelay.feedback")

DEFAULT_PARSE_BUDGET = 30.0  # seconds one mail may be examined (the regexes are bounded; this is the backstop)


@dataclass(frozen=True)
class IngestResult:
    outcome: str  # applied | duplicate | ignored | quarantined
    kind: str  # dsn | arf | unknown
    detail: str = ""
    email_id: str | None = None
    recipient: str | None = None


@dataclass(frozen=True)
class _Match:
    row: StatusRecord
    report: RecipientReport | None


class FeedbackIngestor:
    def __init__(self, storage: Storage, secrets: Sequence[bytes], tencent: TencentRules, inbox: FeedbackInbox,
                 parse: Callable[[bytes], FeedbackReport], metrics: Metrics | None = None,
                 parse_budget: float = DEFAULT_PARSE_BUDGET, review: ReviewRecorder | None = None) -> None:
        self.storage = storage
        self.metrics = metrics or Metrics()
        self.secrets = [s for s in secrets if s]
        self.lists = SuppressionService(storage, tencent)
        self.inbox = inbox
        self.parse = parse
        self.parse_budget = parse_budget
        self.review = review  # bounces no phrase rule recognised (the review loop)

    async def ingest(self, raw: bytes, origin: str, *, envelope_rcpts: Sequence[str] = (),
                     inbox_id: str | None = None) -> IngestResult:
        try:
            result = await self._ingest(raw, origin, envelope_rcpts)
        except Exception as e:  # storage down or a bug: keep the mail, say why
            log.exception("feedback processing failed", extra={"event": "feedback_error", "origin": origin})
            result = IngestResult("quarantined", "unknown", f"processing error: {type(e).__name__}: {e}")
        if result.outcome == "quarantined":
            await asyncio.to_thread(self.inbox.quarantine_sync, raw, result.detail, origin, inbox_id)
        elif inbox_id is not None:
            await asyncio.to_thread(self.inbox.done_sync, inbox_id)
        log.info("feedback", extra={"event": "feedback_" + result.outcome, "kind": result.kind,
                                    "detail": result.detail, "email_id": result.email_id, "origin": origin})
        return result

    async def _ingest(self, raw: bytes, origin: str, envelope_rcpts: Sequence[str]) -> IngestResult:
        try:
            # The worker thread cannot be stopped, but nobody waits for it: the mail is kept in the
            # quarantine with the reason and the next mails are examined on other threads.
            report = await asyncio.wait_for(asyncio.to_thread(self.parse, raw), self.parse_budget)
        except TimeoutError:
            return IngestResult("quarantined", "unknown",
                                f"examining the mail took longer than the budget of {self.parse_budget:g} s")
        if report.is_autoreply:
            return IngestResult("ignored", report.kind, "auto-reply, not a bounce")
        if report.is_delivery_success:
            return IngestResult("ignored", report.kind, "delivery report without failures")
        if report.kind == "unknown" or report.feedback_class is None:
            return IngestResult("quarantined", report.kind, report.reason or "not a bounce or complaint report")
        matches, why = await self._match(report, envelope_rcpts)
        if not matches:
            reported = report.recipients[0] if report.recipients else None
            self._event(report, reported, reported.recipient if reported else None, None, "unmatched")
            return IngestResult("quarantined", report.kind, why)
        applied = 0
        for m in matches:
            applied += await self._apply(report, m)
        first = matches[0].row
        outcome = "applied" if applied else "duplicate"
        return IngestResult(outcome, report.kind, f"{applied} of {len(matches)} applied", first.email_id,
                            first.recipient)

    # region matching
    async def _match(self, report: FeedbackReport, envelope_rcpts: Sequence[str]) -> tuple[list[_Match], str]:
        candidates = [*envelope_rcpts, report.bounce_to or "", report.original_sender or "",
                      report.original_header("Return-Path") or ""]
        forged = False
        for addr in candidates:
            addr = addr.strip().strip("<>")
            if not addr or not addr.lower().startswith("b-"):
                continue
            token = verp.decode(addr, self.secrets)
            if token is None:
                forged = True
                continue
            rows = await self.storage.statuses.get_message(token.email_id)
            for row in rows:
                if verp.recipient_hash(row.recipient) == token.recipient_hash:
                    return [_Match(row, self._report_for(report, row.recipient))], ""
            return [], f"return path names {token.email_id}, which has no such recipient"
        if forged:
            return [], "return path signature does not verify (forged or foreign)"
        mid = report.original_message_id
        if mid:
            found: list[_Match] = []
            wanted = {r.recipient.lower() for r in report.recipients} | {
                (r.original_recipient or "").lower() for r in report.recipients}
            for email_id, _account in await self.storage.statuses.find_by_message_id(mid):
                for row in await self.storage.statuses.get_message(email_id):
                    if row.recipient in wanted:
                        found.append(_Match(row, self._report_for(report, row.recipient)))
            if found:
                return found, ""
            return [], f"Message-ID {mid} matches no recipient of ours"
        return [], "no signed return path and no Message-ID of ours"

    @staticmethod
    def _report_for(report: FeedbackReport, recipient: str) -> RecipientReport | None:
        for r in report.recipients:
            if recipient in (r.recipient.lower(), (r.original_recipient or "").lower()):
                return r
        return report.recipients[0] if report.recipients else None

    # endregion

    async def _apply(self, report: FeedbackReport, m: _Match) -> int:
        row, rr = m.row, m.report
        now = utcnow()
        if report.kind == "arf":
            key = f"arf:{row.email_id}:{row.recipient}:{report.feedback_type or 'abuse'}"
            text = f"complaint ({report.feedback_type or 'abuse'})"
            effects = FeedbackEffects(key, now, row.email_id, row.recipient,
                                      LogEntry(at=now, kind=LogKind.FEEDBACK, text=text, rule="arf"))
            if not await self.lists.apply_feedback(effects, ListChange(ListKind.COMPLAINT, row.account_id,
                                                                       row.recipient, reason=text)):
                return 0
            self._event(report, rr, row.recipient, row.email_id, "applied")
            return 1
        if rr is not None and rr.category is None:
            return 0  # a row that did not fail (delivered/relayed in a mixed report)
        status = rr.status if rr else None
        key = f"dsn:{row.email_id}:{row.recipient}:{status or ''}"
        category = (rr.category if rr else None) or Category.OTHERS
        sub = category.soft_bounce_sub_status
        diag = (rr.diagnostic if rr else "") or "bounce"
        reason = reply_text(rr.smtp_code if rr else None, status, diag)
        entry = LogEntry(at=now, kind=LogKind.FEEDBACK, text=f"bounce: {reason}"[:2000],
                         code=rr.smtp_code if rr else None, enhanced=status, mx_host=rr.remote_mta if rr else None,
                         rule=rr.rule if rr else None)
        effects = FeedbackEffects(key, now, row.email_id, row.recipient, entry, Status.SOFT_BOUNCE, sub,
                                  reason[:1000])
        change = ListChange(ListKind.BOUNCE, row.account_id, row.recipient, reason[:500],
                            (row.mx_host,) if row.mx_host else ()) if sub is SubStatus.SB_NOT_EXIST else None
        if not await self.lists.apply_feedback(effects, change):
            return 0
        if self.review is not None and rr is not None and rr.fallback:
            self.review.note("feedback", reason, rr.rule, rr.smtp_code, status, row.email_id, row.recipient, now)
        self._event(report, rr, row.recipient, row.email_id, "applied", reason=reason[:1000])
        return 1

    def _event(self, report: FeedbackReport, rr: RecipientReport | None, recipient: str | None,
               email_id: str | None, outcome: str, reason: str | None = None) -> None:
        """The ``feedback`` log line (and, once applied, the counter) of one report for one recipient."""
        if report.kind == "arf":
            category = (report.feedback_type or "abuse").lower()[:64]
        else:
            category = str((rr.category if rr else None) or Category.OTHERS)
        if outcome == "applied":
            self.metrics.feedback_applied(report.kind, category)
        log.info("feedback", extra={"event": "feedback", "kind": report.kind, "recipient": recipient,
                                    "category": category, "email_id": email_id, "outcome": outcome,
                                    "reason": reason})
