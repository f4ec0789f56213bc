"""ComplaintPolicy (SPEC §3, §7): the address complained (ARF feedback loop) in the last 180 days.

A match answers REJECT invalid/blacklist (401) with REASON_COMPLAINT. The 180-day expiry is
written by the feedback side and applied by storage; this unit only reads the hit.
"""

from __future__ import annotations

from policies.address import Address
from policies.base import RecipientContext, Verdict
from policies.reasons import REASON_COMPLAINT
from storage.records import SubStatus, SuppressionHits


class ComplaintPolicy:
    name = "complaint"

    def decide(self, ctx: RecipientContext, address: Address, hits: SuppressionHits) -> Verdict:
        if hits.complaint:
            return Verdict.reject(self.name, SubStatus.BLACKLIST, REASON_COMPLAINT)
        return Verdict.cont()
