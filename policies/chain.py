"""PolicyChain: every recipient through the spec's checks, with ONE storage round trip.

What it does, per recipient (``check``):
1. the syntax unit parses the raw recipient (pure; a format error returns at once, no storage call);
2. exactly ONE ``SuppressionIndex.hits`` call, for the address key and its domain;
3. each policy's ``decide`` in order; the first non-CONTINUE verdict wins. All CONTINUE means
   accepted, and the result's verdict is ``Verdict.cont()``.

:func:`default_chain` is the ONLY place the spec order (SPEC §3) is written down: syntax,
no-interception, complaint, block, bounce, unsubscribe. Policies are registered there, never
discovered by name.

Must never: catch storage errors (a failed lookup is the caller's 4xx, not an accept), or hold
state between recipients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.address import Address
from policies.base import Decision, Policy, RecipientContext, SuppressionIndex, Verdict
from policies.block import BlockPolicy
from policies.bounce import BouncePolicy
from policies.complaint import ComplaintPolicy
from policies.no_interception import NoInterceptionPolicy
from policies.syntax import SyntaxPolicy
from policies.unsubscribe import UnsubscribePolicy


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The chain's answer: the verdict, and the parsed address (None only on a format error)."""

    verdict: Verdict
    address: Address | None


class PolicyChain:
    def __init__(
        self,
        policies: Sequence[Policy],
        index: SuppressionIndex,
        *,
        syntax: SyntaxPolicy | None = None,
    ) -> None:
        self._syntax = syntax if syntax is not None else SyntaxPolicy()
        self._policies = tuple(policies)
        self._index = index

    @property
    def order(self) -> tuple[str, ...]:
        """Names of the units in the order they run, syntax first."""
        return (self._syntax.name, *(policy.name for policy in self._policies))

    async def check(self, ctx: RecipientContext) -> CheckResult:
        parsed = self._syntax.decide(ctx)
        if isinstance(parsed, Verdict):
            return CheckResult(parsed, None)
        hits = await self._index.hits(ctx.account_id, ctx.api_user, parsed.key, parsed.domain, ctx.now)
        for policy in self._policies:
            verdict = policy.decide(ctx, parsed, hits)
            if verdict.decision is not Decision.CONTINUE:
                return CheckResult(verdict, parsed)
        return CheckResult(Verdict.cont(), parsed)


def default_chain(index: SuppressionIndex) -> PolicyChain:
    """The spec order (SPEC §3), in exactly this one place."""
    return PolicyChain(
        [
            NoInterceptionPolicy(),
            ComplaintPolicy(),
            BlockPolicy(),
            BouncePolicy(),
            UnsubscribePolicy(),
        ],
        index,
        syntax=SyntaxPolicy(),
    )
