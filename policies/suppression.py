"""SuppressionService: the ONLY code that writes suppression-list entries or computes their expiry.

Delivery (a "user unknown" reply), feedback (a bounce or a complaint received), the CLI and the
HTTP API all write through it, so the rules below exist once:

- bounce list: the N-th "does not exist" report lasts :func:`policies.bounce.bounce_expiry`
  (Tencent by domain or MX host, :class:`~policies.bounce.TencentRules` from
  ``relay/rules/tencent.toml``); a manual entry without a lifetime counts as the first report;
- complaint list: :data:`COMPLAINT_TTL` (180 days) from the complaint;
- block, unsubscribe, no-interception: until removed, unless the writer gives ``expires_at``.

Applying a received feedback mail (seen mark, status change, log line, list entries) is one
storage transaction (:meth:`apply_feedback`): a failure in between leaves nothing half-done, so a
re-run applies it instead of answering "duplicate".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.bounce import TencentRules, bounce_expiry, is_tencent
from storage.protocols import Storage
from storage.records import FeedbackEffects, ListKind, NotExistReport, SuppressionEntry

__all__ = ["COMPLAINT_TTL", "ListChange", "SuppressionService"]

COMPLAINT_TTL = timedelta(days=180)


@dataclass(frozen=True, slots=True)
class ListChange:
    """What a received feedback mail does to the lists: a complaint, or a "does not exist"."""

    kind: ListKind  # COMPLAINT or BOUNCE
    account_id: int
    address: str
    reason: str = ""
    mx_hosts: tuple[str, ...] = ()  # where the address was delivered (Tencent by MX host)


class SuppressionService:
    def __init__(self, storage: Storage, tencent: TencentRules) -> None:
        self.storage = storage
        self.tencent = tencent

    # region expiry rules
    def bounce_expiry_for(self, address: str, mx_hosts: Sequence[str] = ()) -> Callable[[int], timedelta]:
        """The bounce-list lifetime after the N-th report for ``address`` (Tencent or not)."""
        tencent = is_tencent(address.rpartition("@")[2], mx_hosts, self.tencent)
        return lambda n: bounce_expiry(n, tencent)

    def default_expiry(self, kind: ListKind, value: str, created_at: datetime) -> datetime | None:
        """When a new entry written without a lifetime ends (None: until removed)."""
        if kind is ListKind.BOUNCE:
            return created_at + self.bounce_expiry_for(value)(1)
        if kind is ListKind.COMPLAINT:
            return created_at + COMPLAINT_TTL
        return None

    def with_default_expiry(self, entry: SuppressionEntry) -> SuppressionEntry:
        if entry.expires_at is not None:
            return entry
        return dataclasses.replace(entry, expires_at=self.default_expiry(entry.kind, entry.value, entry.created_at))
    # endregion

    # region writes
    async def add(self, entries: Sequence[SuppressionEntry]) -> int:
        """Manual entries (CLI, API): upsert; bounce and complaint entries get their rule's expiry."""
        return await self.storage.suppressions.add([self.with_default_expiry(e) for e in entries])

    async def import_entries(self, entries: Sequence[SuppressionEntry]) -> int:
        """Bulk upload (one transaction per call; callers chunk), expiries as :meth:`add`."""
        return await self.storage.suppressions.import_entries([self.with_default_expiry(e) for e in entries])

    async def report_not_exist(self, account_id: int, address: str, at: datetime, mx_hosts: Sequence[str] = (),
                               reason: str = "") -> SuppressionEntry:
        """One more "does not exist" for ``address`` (delivery's live reply)."""
        return await self.storage.suppressions.report_not_exist(
            account_id, address.lower(), at, self.bounce_expiry_for(address, mx_hosts), reason=reason)

    async def withdraw_not_exist(self, account_id: int, address: str) -> int:
        """Take ``address`` off the bounce list (a re-classified reply says the mailbox is not
        missing after all: ``mailrelay rules reapply``). Returns how many entries were removed."""
        return await self.storage.suppressions.remove(account_id, ListKind.BOUNCE, [address.lower()])

    def _list_effects(self, change: ListChange, at: datetime) -> dict[str, object]:
        if change.kind is ListKind.COMPLAINT:
            return {"entries": (SuppressionEntry(account_id=change.account_id, kind=ListKind.COMPLAINT,
                                                 value=change.address.lower(), created_at=at,
                                                 expires_at=at + COMPLAINT_TTL, reason=change.reason),)}
        if change.kind is ListKind.BOUNCE:
            return {"not_exist": NotExistReport(change.account_id, change.address.lower(),
                                                self.bounce_expiry_for(change.address, change.mx_hosts),
                                                change.reason)}
        raise ValueError(f"feedback changes only the complaint and bounce lists, not {change.kind.value}")

    async def apply_feedback(self, effects: FeedbackEffects, change: ListChange | None = None) -> bool:
        """Write one received bounce/complaint for one recipient in ONE transaction with its seen
        mark; False if it was applied before (nothing written)."""
        if change is not None:
            effects = dataclasses.replace(effects, **self._list_effects(change, effects.at))  # type: ignore[arg-type]
        return await self.storage.feedback.apply(effects)
    # endregion
