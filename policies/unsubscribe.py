"""UnsubscribePolicy (SPEC §3, §7): the recipient unsubscribed from this account's mail.

A match answers REJECT invalid/unsubscribe (402) with REASON_UNSUBSCRIBE.
"""

from __future__ import annotations

from policies.address import Address
from policies.base import RecipientContext, Verdict
from policies.reasons import REASON_UNSUBSCRIBE
from storage.records import SubStatus, SuppressionHits


class UnsubscribePolicy:
    name = "unsubscribe"

    def decide(self, ctx: RecipientContext, address: Address, hits: SuppressionHits) -> Verdict:
        if hits.unsubscribe:
            return Verdict.reject(self.name, SubStatus.UNSUBSCRIBE, REASON_UNSUBSCRIBE)
        return Verdict.cont()
