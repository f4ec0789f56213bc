"""Bounce-list expiry (SPEC §7) at every boundary, Tencent detection, and BouncePolicy's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import (
    REASON_BOUNCE,
    BouncePolicy,
    Decision,
    RecipientContext,
    TencentRules,
    bounce_expiry,
    is_tencent,
    parse_address,
)
from policies.address import Address
from relay.rules import load_tencent_rules
from storage.records import Status, SubStatus, SuppressionHits


@pytest.mark.parametrize(
    ("n", "days"),
    [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (7, 30), (100, 30), (10**6, 30)],
)
def test_tencent_expiry_doubles_and_caps_at_30_days(n: int, days: int) -> None:
    assert bounce_expiry(n, tencent=True) == timedelta(days=days)


@pytest.mark.parametrize(("n", "days"), [(1, 30), (2, 60), (3, 180), (4, 180), (100, 180)])
def test_other_expiry_is_30_60_then_180_days(n: int, days: int) -> None:
    assert bounce_expiry(n, tencent=False) == timedelta(days=days)


@pytest.mark.parametrize("n", [0, -1])
@pytest.mark.parametrize("tencent", [True, False])
def test_expiry_rejects_counts_below_one(n: int, tencent: bool) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        bounce_expiry(n, tencent)


RULES = load_tencent_rules()


@pytest.mark.parametrize(
    ("domain", "mx_hosts", "expected"),
    [
        ("qq.com", [], True),
        ("QQ.COM.", [], True),  # case and trailing root dot do not matter
        ("foxmail.com", [], True),
        ("vip.qq.com", [], True),
        ("exmail.qq.com", [], True),
        ("tencent.com", [], True),
        ("corp.example", ["mxbiz1.qq.com."], True),  # Exmail-hosted domain
        ("corp.example", ["mx1.example.net", "MX3.QQ.COM"], True),  # any MX host counts
        ("corp.example", ["mx.qq.com"], True),  # exact suffix
        ("corp.example", ["mx.notqq.com"], False),  # suffixes match on a label boundary only
        ("corp.example", ["qq.com.evil.example"], False),
        ("notqq.com", [], False),
        ("gmail.com", ["gmail-smtp-in.l.google.com"], False),
        ("sub.qq.com", [], False),  # domains match exactly; MX decides for the rest
    ],
)
def test_is_tencent(domain: str, mx_hosts: list[str], expected: bool) -> None:
    assert is_tencent(domain, mx_hosts, RULES) is expected


def test_tencent_rules_default_lists_and_normalization() -> None:
    assert {"qq.com", "foxmail.com", "vip.qq.com", "exmail.qq.com", "tencent.com"} <= RULES.domains
    assert {"mx.qq.com", "qq.com", "exmail.qq.com", "tencent.com"} <= set(RULES.mx_suffixes)
    custom = TencentRules(domains=frozenset({"Example.ORG."}), mx_suffixes=("MX.Example.NET.",))
    assert custom.domains == frozenset({"example.org"})
    assert custom.mx_suffixes == ("mx.example.net",)
    assert is_tencent("corp.example", ["a.mx.example.net"], custom)
    with pytest.raises(ValueError, match="empty"):
        TencentRules(domains=frozenset({""}), mx_suffixes=())


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _ctx() -> RecipientContext:
    return RecipientContext(1, "api", "s@example.org", "u@example.com", False, NOW)


def _addr() -> Address:
    parsed = parse_address("u@example.com", False)
    assert isinstance(parsed, Address)
    return parsed


@pytest.mark.parametrize(
    ("until", "rejected"),
    [
        (None, False),
        (NOW - timedelta(days=1), False),
        (NOW, False),  # expired at exactly now: "within its expiry" means until > now
        (NOW + timedelta(microseconds=1), True),
        (NOW + bounce_expiry(1, tencent=False), True),
    ],
)
def test_bounce_policy_matches_only_unexpired_entries(until: datetime | None, rejected: bool) -> None:
    verdict = BouncePolicy().decide(_ctx(), _addr(), SuppressionHits(bounce_until=until))
    if rejected:
        assert verdict.decision is Decision.REJECT
        assert (verdict.policy, verdict.status, verdict.sub_status, verdict.reason) == (
            "bounce",
            Status.INVALID,
            SubStatus.BLACKLIST,
            REASON_BOUNCE,
        )
    else:
        assert verdict.decision is Decision.CONTINUE
