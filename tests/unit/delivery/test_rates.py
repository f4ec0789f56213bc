"""RateMeter with a fake clock: windows, sliding accuracy, expiry of old buckets, the 1-hour series."""

from __future__ import annotations

import pytest

from relay.delivery.rates import RateKind, RateMeter, RatePoint


class FakeClock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _steady(meter: RateMeter, clock: FakeClock, kind: RateKind, per_second: int, seconds: int) -> None:
    for _ in range(seconds):
        meter.add(kind, per_second)
        clock.advance(1.0)


def test_empty_meter_is_zero() -> None:
    m = RateMeter(FakeClock())
    assert m.rates(RateKind.IN) == (0.0, 0.0, 0.0)
    assert m.total(RateKind.OUT) == 0


def test_steady_rate_reads_exactly_in_every_window_and_phase() -> None:
    clock = FakeClock()
    m = RateMeter(clock)
    _steady(m, clock, RateKind.OUT, 10, 60)
    assert m.rates(RateKind.OUT) == pytest.approx((10.0, 10.0, 10.0))
    # mid-second, with the current second's events already counted
    clock.advance(0.5)
    m.add(RateKind.OUT, 5)
    assert m.rates(RateKind.OUT) == pytest.approx((10.0, 10.0, 10.0))


def test_kinds_accept_their_string_values() -> None:
    clock = FakeClock()
    m = RateMeter(clock)
    m.add("try", 5)
    assert m.total(RateKind.TRY) == 5 and m.rate("try", 5, now=clock.now + 0.999) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        m.add("sent")


def test_sample_with_explicit_now() -> None:
    m = RateMeter(FakeClock(0.0))
    p = m.sample(12.0, 4)
    assert p is not None and (p.at, p.pending) == (10.0, 4)


def test_kinds_are_independent() -> None:
    clock = FakeClock()
    m = RateMeter(clock)
    m.add(RateKind.IN, 30)
    m.add(RateKind.TRY, 15)
    clock.advance(0.999)
    assert m.rate(RateKind.IN, 5) == pytest.approx(6.0)
    assert m.rate(RateKind.TRY, 15) == pytest.approx(1.0)
    assert m.rate(RateKind.OUT, 30) == 0.0
    assert (m.total(RateKind.IN), m.total(RateKind.TRY)) == (30, 15)


def test_burst_leaves_the_windows_in_order() -> None:
    clock = FakeClock(100.0)
    m = RateMeter(clock)
    m.add(RateKind.IN, 30)  # all in second 100
    clock.now = 104.0
    assert m.rates(RateKind.IN) == pytest.approx((6.0, 2.0, 1.0))
    clock.now = 105.5  # second 100 is half inside the 5 s window
    assert m.rate(RateKind.IN, 5) == pytest.approx(3.0)
    clock.now = 106.0
    assert m.rates(RateKind.IN) == pytest.approx((0.0, 2.0, 1.0))
    clock.now = 116.0
    assert m.rates(RateKind.IN) == pytest.approx((0.0, 0.0, 1.0))
    clock.now = 131.0
    assert m.rates(RateKind.IN) == (0.0, 0.0, 0.0)
    clock.now = 100.0 + 31 * 7  # the ring slot of second 100 reused: stale count must not come back
    assert m.rates(RateKind.IN) == (0.0, 0.0, 0.0)
    assert m.total(RateKind.IN) == 30


def test_memory_is_bounded() -> None:
    clock = FakeClock()
    m = RateMeter(clock)
    _steady(m, clock, RateKind.TRY, 1, 5000)
    assert all(len(b.counts) == 31 for b in m._buckets.values())


def test_window_range() -> None:
    m = RateMeter(FakeClock())
    for w in (0, 31):
        with pytest.raises(ValueError, match="window"):
            m.rate(RateKind.IN, w)
    assert m.rate(RateKind.IN, 1) == 0.0


def test_sample_once_per_five_second_slot() -> None:
    clock = FakeClock(1000.0)
    m = RateMeter(clock)
    _steady(m, clock, RateKind.IN, 4, 5)  # now 1005.0
    p = m.sample(pending=7)
    assert p == RatePoint(1005.0, pytest.approx(4.0), 0.0, 0.0, 7)  # type: ignore[arg-type]
    clock.advance(4.9)
    assert m.sample(pending=9) is None  # same slot: a timer and a lazy caller may both call
    clock.advance(0.1)
    p2 = m.sample(pending=9)
    assert p2 is not None and p2.at == 1010.0 and p2.pending == 9
    assert [pt.at for pt in m.series()] == [1005.0, 1010.0]


def test_series_points_are_tuples_in_order() -> None:
    clock = FakeClock(0.0)
    m = RateMeter(clock)
    m.add(RateKind.OUT, 10)
    clock.advance(1.0)
    m.sample(pending=3)
    (at, in_rate, try_rate, out_rate, pending), = m.series()
    assert (at, in_rate, try_rate, out_rate, pending) == (0.0, 0.0, 0.0, 2.0, 3)


def test_series_keeps_one_hour_as_720_points() -> None:
    clock = FakeClock(0.0)
    m = RateMeter(clock)
    for i in range(1000):
        clock.now = i * 5.0
        assert m.sample(pending=i) is not None
    pts = m.series()
    assert len(pts) == 720
    assert pts[0].pending == 280 and pts[-1].pending == 999
    assert pts[-1].at - pts[0].at == 3595.0


def test_series_drops_points_older_than_an_hour_after_a_gap() -> None:
    clock = FakeClock(0.0)
    m = RateMeter(clock)
    m.sample(pending=1)
    clock.now = 3000.0
    m.sample(pending=2)
    clock.now = 3700.0
    assert [p.pending for p in m.series()] == [2]
    m.sample(pending=3)
    assert [p.pending for p in m.series()] == [2, 3]


def test_clock_step_back_does_not_duplicate_slots() -> None:
    clock = FakeClock(100.0)
    m = RateMeter(clock)
    m.sample(pending=0)
    clock.now = 90.0
    assert m.sample(pending=0) is None
    assert len(m.series()) == 1
