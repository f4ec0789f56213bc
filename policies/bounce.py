"""BouncePolicy and the bounce-list expiry rule (SPEC §3, §7).

What it does:
- :class:`BouncePolicy` rejects a recipient whose bounce-list entry is still running
  (``hits.bounce_until > ctx.now``) with invalid/blacklist (401) REASON_BOUNCE;
- :func:`bounce_expiry` is THE rule for how long an entry lasts after its N-th "does not exist"
  report, and :func:`is_tencent` decides which branch of the rule applies.

The rule lives here, next to the code that reads the list, so that writer
(:class:`policies.suppression.SuppressionService`) and reader cannot disagree. Tencent's domains
and MX suffixes are data (``relay/rules/tencent.toml``), loaded by relay and passed in as
:class:`TencentRules`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from policies.address import Address
from policies.base import RecipientContext, Verdict
from policies.reasons import REASON_BOUNCE
from storage.records import SubStatus, SuppressionHits

TENCENT_MAX_DAYS = 30
OTHER_DAYS_BY_COUNT = (30, 60)  # N=1, N=2
OTHER_MAX_DAYS = 180  # N>=3


class BouncePolicy:
    name = "bounce"

    def decide(self, ctx: RecipientContext, address: Address, hits: SuppressionHits) -> Verdict:
        # Storage already filters expired entries; comparing again keeps the verdict right for a
        # context whose ``now`` differs from the lookup's (re-check before a retry).
        if hits.bounce_until is not None and hits.bounce_until > ctx.now:
            return Verdict.reject(self.name, SubStatus.BLACKLIST, REASON_BOUNCE)
        return Verdict.cont()


def bounce_expiry(n: int, tencent: bool) -> timedelta:
    """How long the bounce-list entry lasts after the N-th "does not exist" report (N >= 1).

    Tencent mailboxes: 2^(N-1) days, at most 30 days. Others: 30, 60, then 180 days.
    """
    if n < 1:
        raise ValueError(f"bounce count must be >= 1, got {n}")
    if tencent:
        # 2^5 = 32 > 30 already: cap before exponentiating so a huge N stays cheap.
        return timedelta(days=TENCENT_MAX_DAYS if n > 5 else min(2 ** (n - 1), TENCENT_MAX_DAYS))
    if n <= len(OTHER_DAYS_BY_COUNT):
        return timedelta(days=OTHER_DAYS_BY_COUNT[n - 1])
    return timedelta(days=OTHER_MAX_DAYS)


def _normalize_host(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class TencentRules:
    """Which recipients count as Tencent mailboxes: exact domains, or MX hosts under a suffix.

    Values are normalized on construction (lower-case, no trailing dot), so a rules file may be
    written either way.
    """

    domains: frozenset[str]
    mx_suffixes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", frozenset(_normalize_host(d) for d in self.domains))
        object.__setattr__(self, "mx_suffixes", tuple(_normalize_host(s) for s in self.mx_suffixes))
        if "" in self.domains or "" in self.mx_suffixes:
            raise ValueError("TencentRules: empty domain or MX suffix")


def is_tencent(domain: str, mx_hosts: Sequence[str], tencent: TencentRules) -> bool:
    """True if ``domain`` is a Tencent domain or any of its MX hosts sits under a Tencent suffix.

    Suffixes match on a label boundary: ``mx1.qq.com`` is under ``qq.com``, ``notqq.com`` is not.
    """
    if _normalize_host(domain) in tencent.domains:
        return True
    return any(_under_suffix(_normalize_host(host), tencent.mx_suffixes) for host in mx_hosts)


def _under_suffix(host: str, suffixes: Iterable[str]) -> bool:
    return any(host == suffix or host.endswith("." + suffix) for suffix in suffixes)
