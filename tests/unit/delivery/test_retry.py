"""Retry schedule, jitter and expiry at every boundary (pure; no clock, no sleeps)."""

from __future__ import annotations

import random

import pytest

from relay.delivery.retry import DEFAULT_SCHEDULE, RetryPolicy


class _Fixed(random.Random):
    """uniform() always returns the same fraction of its range (0 = low end, 1 = high end)."""

    def __init__(self, where: float) -> None:
        super().__init__(0)
        self.where = where

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.where


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 60), (2, 300), (3, 900), (4, 1800), (5, 3600), (6, 7200), (7, 7200), (100, 7200)],
)
def test_default_schedule_then_every_two_hours(attempts: int, delay: float) -> None:
    assert RetryPolicy(jitter=0).next_delay(attempts) == delay


def test_default_schedule_matches_spec() -> None:
    assert DEFAULT_SCHEDULE == (60, 300, 900, 1800, 3600, 7200)


@pytest.mark.parametrize("attempts", [0, -1])
def test_attempts_must_be_at_least_one(attempts: int) -> None:
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        RetryPolicy().next_delay(attempts)


def test_custom_schedule_and_then_every() -> None:
    p = RetryPolicy(schedule=(10, 20), then_every=30, jitter=0)
    assert [p.next_delay(n) for n in (1, 2, 3, 4)] == [10, 20, 30, 30]
    assert RetryPolicy(schedule=(), then_every=5, jitter=0).next_delay(1) == 5


@pytest.mark.parametrize(("where", "factor"), [(0.0, 0.9), (0.5, 1.0), (1.0, 1.1)])
def test_jitter_bounds(where: float, factor: float) -> None:
    p = RetryPolicy(jitter=0.1, rng=_Fixed(where))
    assert p.next_delay(1) == pytest.approx(60 * factor)
    assert p.next_delay(9) == pytest.approx(7200 * factor)


def test_jitter_stays_within_ten_percent_with_a_real_rng() -> None:
    p = RetryPolicy(rng=random.Random(42))
    delays = [p.next_delay(2) for _ in range(1000)]
    assert all(270 <= d <= 330 for d in delays)
    assert len(set(delays)) > 900  # it does spread


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"schedule": (60, 0)}, "steps must be > 0"),
        ({"then_every": 0}, "then_every"),
        ({"max_age": -1}, "max_age"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_bad_parameters(kwargs: dict[str, float], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_next_time_is_now_plus_delay() -> None:
    p = RetryPolicy(jitter=0)
    assert p.next_time(now=1000.0, attempts=1, first_seen=1000.0) == 1060.0
    assert p.next_time(now=5000.0, attempts=3, first_seen=1000.0) == 5900.0


def test_expiry_boundary_exact_deadline_is_still_tried() -> None:
    p = RetryPolicy(schedule=(100,), then_every=100, max_age=1000, jitter=0)
    # deadline = 0 + 1000
    assert p.next_time(now=899.0, attempts=5, first_seen=0.0) == 999.0
    assert p.next_time(now=900.0, attempts=5, first_seen=0.0) == 1000.0  # lands exactly on it
    assert p.next_time(now=900.5, attempts=5, first_seen=0.0) is None  # would pass it
    assert p.next_time(now=1000.0, attempts=5, first_seen=0.0) is None
    assert p.next_time(now=5000.0, attempts=5, first_seen=0.0) is None  # long past


def test_expiry_accounts_for_jitter() -> None:
    high = RetryPolicy(schedule=(100,), max_age=1000, jitter=0.1, rng=_Fixed(1.0))  # delay 110
    low = RetryPolicy(schedule=(100,), max_age=1000, jitter=0.1, rng=_Fixed(0.0))  # delay 90
    assert high.next_time(now=895.0, attempts=1, first_seen=0.0) is None
    assert low.next_time(now=895.0, attempts=1, first_seen=0.0) == pytest.approx(985.0)


def test_three_days_default_walk() -> None:
    """Walk the default policy from first failure to expiry: the attempts stay inside 3 days."""
    p = RetryPolicy(jitter=0)
    now, attempts, times = 0.0, 0, []
    while True:
        attempts += 1
        nxt = p.next_time(now, attempts, first_seen=0.0)
        if nxt is None:
            break
        times.append(nxt)
        now = nxt
    assert times[:6] == [60, 360, 1260, 3060, 6660, 13860]
    assert times[-1] <= 3 * 86400 < times[-1] + 7200
    assert len(times) == 6 + (3 * 86400 - 13860) // 7200
