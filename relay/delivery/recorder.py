"""OutcomeRecorder: the only writer of delivery outcomes to the shared database.

Each attempt becomes a send-log line (time, MX, reply code, enhanced code, text, duration, the
rule that classified it) and the recipient's status and reason: the final one, or for a deferral
still "sending" with that reply as its reason. A "user unknown" also
enters the account's bounce list through the suppression service (which owns the SPEC §7 expiry).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from policies import SuppressionService, TencentRules
from relay.delivery.state import DeliveryItem
from relay.rules.review import ReviewRecorder
from relay.rules.types import AttemptResult, Classified, Stage
from storage.protocols import Storage
from storage.records import LogEntry, LogKind, Status, SubStatus

log = logging.getLogger("mailrelay.delivery.recorder")


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class OutcomeRecorder:
    def __init__(self, storage: Storage, tencent: TencentRules, review: ReviewRecorder | None = None) -> None:
        self.storage = storage
        self.lists = SuppressionService(storage, tencent)
        self.review = review  # replies no phrase rule recognised (the review loop)

    def _review(self, item: DeliveryItem, result: AttemptResult, c: Classified | None, at: float) -> None:
        """Keep a remote reply that only a code-class default or a status-code rule decided."""
        if self.review is not None and c is not None and c.fallback and result.code is not None:
            self.review.note("delivery", result.reply_line(), c.rule, result.code, result.enhanced, item.email_id,
                             item.recipient, _dt(at))

    @staticmethod
    def log_entry(result: AttemptResult, c: Classified | None, at: float) -> LogEntry:
        return LogEntry(
            at=_dt(at),
            kind=LogKind.POLICY if result.stage is Stage.POLICY else LogKind.ATTEMPT,
            text=result.text if result.stage is Stage.POLICY else f"{result.stage.value}: {result.text}",
            code=result.code, enhanced=result.enhanced, mx_host=result.mx_host, mx_ip=result.mx_ip,
            duration_ms=result.duration_ms, rule=c.rule if c else None,
        )

    async def delivered(self, item: DeliveryItem, result: AttemptResult, c: Classified, at: float) -> None:
        await self.storage.statuses.update_status(
            item.email_id, item.recipient, Status.DELIVERED, None, result.reply_line(),
            self.log_entry(result, c, at), send_ip=result.local_ip,
        )

    async def retrying(self, item: DeliveryItem, result: AttemptResult, c: Classified, reason: str, at: float) -> None:
        # Still sending; the reason is the last reply, so a status search shows why it waits.
        await self.storage.statuses.update_status(
            item.email_id, item.recipient, Status.SENDING, None, reason,
            self.log_entry(result, c, at), send_ip=result.local_ip,
        )
        self._review(item, result, c, at)  # after the write: a retried write counts once

    async def invalid(self, item: DeliveryItem, result: AttemptResult, c: Classified | None,
                      sub_status: SubStatus | None, reason: str, at: float) -> None:
        await self.storage.statuses.update_status(
            item.email_id, item.recipient, Status.INVALID, sub_status, reason,
            self.log_entry(result, c, at), send_ip=result.local_ip,
        )
        self._review(item, result, c, at)

    async def not_exist(self, item: DeliveryItem, mx_hosts: tuple[str, ...], reason: str, at: float) -> None:
        entry = await self.lists.report_not_exist(item.account_id, item.recipient, _dt(at), mx_hosts, reason=reason)
        log.info("bounce list entry", extra={"event": "bounce_list_add", "recipient": item.recipient,
                                             "hits": entry.hit_count,
                                             "expires_at": entry.expires_at.isoformat() if entry.expires_at else None})
