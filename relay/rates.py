"""Per-API_USER submission rate limits (token buckets), shared by every session of the process
and by the HTTP send API: one budget per API_USER, whichever way the mail comes in.

Over the limit the client gets a 4xx at MAIL FROM (HTTP: 429) and can retry: mail is never
dropped silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class RateBudget(Protocol):
    """The per-API_USER message budget: this process's limiter, or the owner's for an intake worker."""

    async def acquire(self, api_user: str, messages: int = 1) -> bool: ...

    def refund(self, api_user: str, messages: int = 1) -> None:
        """Give back tokens taken for mail that was then refused for another reason."""


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket depth
    tokens: float
    stamp: float

    def give_back(self, n: float) -> None:
        self.tokens = min(self.burst, self.tokens + n)

    def take(self, now: float, n: float = 1.0) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class MessageRateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, api_user: str, messages: int = 1) -> bool:
        """Take ``messages`` tokens at once, or none (an HTTP request is sent whole or not at all)."""
        now = self.clock()
        b = self._buckets.get(api_user)
        if b is None:
            b = self._buckets[api_user] = TokenBucket(self.rate, self.burst, self.burst, now)
        return b.take(now, float(messages))

    async def acquire(self, api_user: str, messages: int = 1) -> bool:
        return self.allow(api_user, messages)

    def refund(self, api_user: str, messages: int = 1) -> None:
        b = self._buckets.get(api_user)
        if b is not None:
            b.give_back(float(messages))
