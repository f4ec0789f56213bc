"""NoInterceptionPolicy (SPEC §3, §7): the customer's "never stop mail to this" list.

A match (address or whole receiving domain, for this API_USER or ``all``; storage resolves the
scope) answers ALLOW, which skips every later list: complaint, block, bounce and unsubscribe.
"""

from __future__ import annotations

from policies.address import Address
from policies.base import RecipientContext, Verdict
from storage.records import SuppressionHits


class NoInterceptionPolicy:
    name = "no-interception"

    def decide(self, ctx: RecipientContext, address: Address, hits: SuppressionHits) -> Verdict:
        return Verdict.allow(self.name) if hits.no_interception else Verdict.cont()
