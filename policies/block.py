"""BlockPolicy (SPEC §3, §7): the customer's custom block list.

Entries name an address or a whole receiving domain, for one API_USER or ``all``; storage matches
both forms and both scopes in the single ``hits`` lookup. A match answers REJECT
invalid/blacklist (401) with REASON_BLOCK.
"""

from __future__ import annotations

from policies.address import Address
from policies.base import RecipientContext, Verdict
from policies.reasons import REASON_BLOCK
from storage.records import SubStatus, SuppressionHits


class BlockPolicy:
    name = "block"

    def decide(self, ctx: RecipientContext, address: Address, hits: SuppressionHits) -> Verdict:
        if hits.block:
            return Verdict.reject(self.name, SubStatus.BLACKLIST, REASON_BLOCK)
        return Verdict.cont()
