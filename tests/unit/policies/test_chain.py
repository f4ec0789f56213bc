"""PolicyChain and default_chain: spec order, one lookup per recipient, the case table."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from policies import (
    REASON_BLOCK,
    REASON_COMPLAINT,
    REASON_FORMAT_ERROR,
    Address,
    CheckResult,
    Decision,
    PolicyChain,
    RecipientContext,
    SuppressionIndex,
    Verdict,
    default_chain,
)
from storage.records import Status, SubStatus, SuppressionHits

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CASES = Path(__file__).parent / "cases" / "policy_cases.toml"


@dataclass(frozen=True)
class Lookup:
    account_id: int
    api_user: str
    address: str
    domain: str
    now: datetime


@dataclass
class FakeIndex:
    """In-memory SuppressionIndex (the storage process boundary): fixed answer, records calls."""

    answer: SuppressionHits = field(default_factory=SuppressionHits)
    calls: list[Lookup] = field(default_factory=list)

    async def hits(
        self, account_id: int, api_user: str, address: str, domain: str, now: datetime
    ) -> SuppressionHits:
        self.calls.append(Lookup(account_id, api_user, address, domain, now))
        return self.answer


def ctx(recipient: str, smtputf8: bool = False) -> RecipientContext:
    return RecipientContext(7, "api-a", "sender@shop.example", recipient, smtputf8, NOW)


def test_default_chain_runs_the_spec_order() -> None:
    assert default_chain(FakeIndex()).order == (
        "syntax",
        "no-interception",
        "complaint",
        "block",
        "bounce",
        "unsubscribe",
    )


def test_fake_index_satisfies_the_protocol() -> None:
    index: SuppressionIndex = FakeIndex()  # checked by mypy when run over tests
    assert index is not None


async def test_one_lookup_per_recipient_with_key_and_domain() -> None:
    index = FakeIndex(SuppressionHits(bounce_until=NOW + timedelta(days=1), unsubscribe=True, block=False))
    chain = default_chain(index)
    recipients = ["A@Example.COM", "b@example.org", '"C"@Sub.Example.net']
    for recipient in recipients:
        await chain.check(ctx(recipient))
    assert index.calls == [
        Lookup(7, "api-a", "a@example.com", "example.com", NOW),
        Lookup(7, "api-a", "b@example.org", "example.org", NOW),
        Lookup(7, "api-a", "c@sub.example.net", "sub.example.net", NOW),
    ]


async def test_format_error_never_reaches_storage() -> None:
    index = FakeIndex()
    result = await default_chain(index).check(ctx("no-at-sign"))
    assert result == CheckResult(
        Verdict(
            Decision.REJECT,
            "syntax",
            Status.INVALID,
            SubStatus.FORMAT_ERROR,
            REASON_FORMAT_ERROR,
            "missing '@'",
        ),
        None,
    )
    assert index.calls == []


async def test_no_interception_overrides_every_other_list() -> None:
    index = FakeIndex(
        SuppressionHits(
            no_interception=True,
            complaint=True,
            block=True,
            bounce_until=NOW + timedelta(days=30),
            unsubscribe=True,
        )
    )
    result = await default_chain(index).check(ctx("user@example.com"))
    assert result.verdict == Verdict.allow("no-interception")
    assert result.address == Address("user", "example.com")
    assert len(index.calls) == 1


async def test_accepted_recipient_answers_cont_with_the_parsed_address() -> None:
    result = await default_chain(FakeIndex()).check(ctx("<Jane@Example.com>"))
    assert result.verdict == Verdict.cont()
    assert result.verdict.decision is Decision.CONTINUE
    assert result.address is not None
    assert (result.address.address, result.address.key) == ("Jane@example.com", "jane@example.com")


class _Always:
    """A policy answering a fixed verdict, to show the first non-CONTINUE wins."""

    def __init__(self, name: str, verdict: Verdict) -> None:
        self.name = name
        self._verdict = verdict

    def decide(self, ctx: RecipientContext, address: Address, hits: SuppressionHits) -> Verdict:
        return self._verdict


async def test_first_non_continue_verdict_wins_in_given_order() -> None:
    block = Verdict.reject("b", SubStatus.BLACKLIST, REASON_BLOCK)
    complaint = Verdict.reject("c", SubStatus.BLACKLIST, REASON_COMPLAINT)
    chain = PolicyChain(
        [_Always("a", Verdict.cont()), _Always("b", block), _Always("c", complaint)], FakeIndex()
    )
    assert chain.order == ("syntax", "a", "b", "c")
    assert (await chain.check(ctx("u@example.com"))).verdict is block


def test_verdict_constructors() -> None:
    assert Verdict.cont() == Verdict(Decision.CONTINUE, "", None, None, None, None)
    assert Verdict.allow("x") == Verdict(Decision.ALLOW, "x", None, None, None, None)
    rejected = Verdict.reject("x", SubStatus.UNSUBSCRIBE, "unsubscribe")
    assert rejected == Verdict(
        Decision.REJECT, "x", Status.INVALID, SubStatus.UNSUBSCRIBE, "unsubscribe", None
    )
    assert rejected.rejected and not Verdict.cont().rejected


# --- the case table -------------------------------------------------------------------------

_CASE_KEYS = {
    "name",
    "recipient",
    "smtputf8",
    "hits",
    "lookup",
    "decision",
    "policy",
    "sub_status",
    "reason",
    "detail",
}
_HIT_KEYS = {"no_interception", "complaint", "block", "bounce_days", "unsubscribe"}


def _load_cases() -> list[dict[str, Any]]:
    with CASES.open("rb") as f:
        cases: list[dict[str, Any]] = tomllib.load(f)["case"]
    for case in cases:  # a typo in the table must fail loudly, not test nothing
        assert set(case) <= _CASE_KEYS, (case["name"], set(case) - _CASE_KEYS)
        assert set(case.get("hits", {})) <= _HIT_KEYS, (case["name"], case["hits"])
    return cases


def _hits(spec: dict[str, Any]) -> SuppressionHits:
    days = spec.get("bounce_days")
    return SuppressionHits(
        no_interception=spec.get("no_interception", False),
        complaint=spec.get("complaint", False),
        block=spec.get("block", False),
        bounce_until=None if days is None else NOW + timedelta(days=days),
        unsubscribe=spec.get("unsubscribe", False),
    )


_TABLE = _load_cases()


@pytest.mark.parametrize("case", _TABLE, ids=[case["name"] for case in _TABLE])
async def test_case_table(case: dict[str, Any]) -> None:
    index = FakeIndex(_hits(case.get("hits", {})))
    result = await default_chain(index).check(ctx(case["recipient"], case.get("smtputf8", False)))

    decision = Decision(case["decision"])
    sub_status = case.get("sub_status")
    expected = Verdict(
        decision=decision,
        policy=case["policy"],
        status=Status.INVALID if decision is Decision.REJECT else None,
        sub_status=None if sub_status is None else SubStatus(sub_status),
        reason=case.get("reason"),
        detail=case.get("detail"),
    )
    assert result.verdict == expected
    assert [call.address for call in index.calls] == ([case["lookup"]] if case["lookup"] else [])
    assert (result.address is None) == (case["lookup"] == "")
