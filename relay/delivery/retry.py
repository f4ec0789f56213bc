"""Retry timing of temporary failures: the backoff schedule and the maximum age (SPEC §5).

What it does: after the N-th failed attempt of a recipient, :meth:`RetryPolicy.next_delay` gives
the wait (1m, 5m, 15m, 30m, 1h, 2h, then every 2h by default, each ±10 % jitter so that a burst
of failures does not come back as a burst), and :meth:`RetryPolicy.next_time` says when to try
again — or ``None`` once that would be later than ``first_seen + max_age``: the caller then marks
the recipient invalid with the last failure's reason (Postfix ``maximal_queue_lifetime``: expiry
is decided when an attempt fails, never by a timer).

Pure: no clock of its own (``now`` is passed in), randomness from an injected ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

DEFAULT_SCHEDULE: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)


class RetryPolicy:
    def __init__(
        self,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        then_every: float = 7200.0,
        max_age: float = 3 * 86400.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if any(step <= 0 for step in schedule):
            raise ValueError("retry schedule steps must be > 0 seconds")
        if then_every <= 0:
            raise ValueError("then_every must be > 0 seconds")
        if max_age <= 0:
            raise ValueError("max_age must be > 0 seconds")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.schedule = tuple(float(s) for s in schedule)
        self.then_every = float(then_every)
        self.max_age = float(max_age)
        self.jitter = float(jitter)
        self._rng = rng or random.Random()

    def base_delay(self, attempts: int) -> float:
        """The wait after ``attempts`` failed attempts, without jitter."""
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1 (failed attempts so far), got {attempts}")
        return self.schedule[attempts - 1] if attempts <= len(self.schedule) else self.then_every

    def next_delay(self, attempts: int) -> float:
        """The wait after ``attempts`` failed attempts, with ±``jitter`` (uniform)."""
        base = self.base_delay(attempts)
        if not self.jitter:
            return base
        return base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def deadline(self, first_seen: float) -> float:
        return first_seen + self.max_age

    def next_time(self, now: float, attempts: int, first_seen: float) -> float | None:
        """When to try again, or ``None``: expired (the next try would be after the deadline).

        A retry landing exactly on the deadline is still made.
        """
        at = now + self.next_delay(attempts)
        return None if at > self.deadline(first_seen) else at
