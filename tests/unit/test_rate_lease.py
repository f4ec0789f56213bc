"""Rate tokens leased to an intake worker (relay/rates.py lease, relay/workers/remote.py)."""

from __future__ import annotations

from typing import Any

from relay.rates import MessageRateLimiter
from relay.workers.remote import RemoteRateBudget


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_only_takes_what_keeps_the_bucket_above_half() -> None:
    clock = _Clock()
    limiter = MessageRateLimiter(rate=0.001, burst=100, clock=clock)
    assert limiter.allow("u")  # 99 left
    assert limiter.lease("u", 16) == 16  # 83 left
    assert limiter.allow("u") and limiter.lease("u", 16) == 16  # 66 left
    assert limiter.allow("u") and limiter.lease("u", 16) == 15  # 65 - 50: down to half
    assert limiter.allow("u") and limiter.lease("u", 16) == 0  # below half: one by one
    assert limiter.lease("nobody", 16) == 0
    small = MessageRateLimiter(rate=0.001, burst=3, clock=clock)
    assert small.allow("u") and small.lease("u", 16) == 0  # 2 left, half is 1.5: no lease at all


class _Owner:
    """The owner's side of the "rate" request, in-process."""

    def __init__(self, limiter: MessageRateLimiter) -> None:
        self.limiter = limiter
        self.requests = 0

    async def call(self, op: str, **doc: Any) -> Any:
        assert op == "rate"
        self.requests += 1
        if not self.limiter.allow(doc["u"], doc["n"]):
            return [False, 0]
        return [True, self.limiter.lease(doc["u"], doc["lease"])]


async def test_leased_tokens_are_spent_without_a_request_and_expire() -> None:
    clock = _Clock()
    owner = _Owner(MessageRateLimiter(rate=0.001, burst=1000, clock=clock))
    budget = RemoteRateBudget(owner, clock=clock)  # type: ignore[arg-type]
    assert all([await budget.acquire("u") for _ in range(17 * 5)])
    assert owner.requests == 5  # one request, then 16 leased tokens
    assert await budget.acquire("u") and owner.requests == 6
    clock.now += RemoteRateBudget.LEASE_SECONDS  # the 16 new ones expire unspent
    assert await budget.acquire("u") and owner.requests == 7
    assert await budget.acquire("other") and owner.requests == 8  # per API_USER


async def test_near_the_limit_every_mail_asks_and_the_budget_is_exact() -> None:
    clock = _Clock()
    owner = _Owner(MessageRateLimiter(rate=0.001, burst=40, clock=clock))
    first, second = RemoteRateBudget(owner, clock=clock), RemoteRateBudget(owner, clock=clock)  # type: ignore[arg-type]
    results = [await (first if i % 2 else second).acquire("u") for i in range(60)]
    assert results.count(True) == 40 and results[-10:] == [False] * 10  # every leased token was spent
