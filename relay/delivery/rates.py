"""RateMeter: In / Try / Out rates of one queue over the last 5, 15 and 30 s, and the chart series.

What it does (SPEC §5 "Rates per queue"):
- counts events of three kinds — IN (accepted into the queue), TRY (delivery attempts), OUT
  (delivered) — in per-second buckets: a ring of 31 buckets per kind, so memory is O(1) whatever
  the traffic;
- :meth:`RateMeter.rate` is the average per second over the last ``window`` seconds (1..30), as a
  sliding window: the current partial second counts fully and the oldest second in proportion to
  how much of it is still inside the window, so a steady rate reads exactly, without a 1 s lag;
- :meth:`RateMeter.sample` appends one point per 5-second slot (the 5 s averages plus the pending
  count the caller supplies) to a ring of 720 points = 1 hour, for the queue chart. It is
  idempotent within a slot, so a timer and lazy callers may both call it.

Pure: time comes from the injected clock (float seconds); no tasks, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple

WINDOWS = (5, 15, 30)
SAMPLE_EVERY = 5.0
SERIES_KEEP = 3600.0  # seconds of chart history: 720 points

__all__ = ["SAMPLE_EVERY", "SERIES_KEEP", "WINDOWS", "RateKind", "RateMeter", "RatePoint"]


class RateKind(StrEnum):
    IN = "in"  # accepted into the queue
    TRY = "try"  # delivery attempts
    OUT = "out"  # delivered


class RatePoint(NamedTuple):
    """One chart point: rates are the 5 s averages (messages/s) at ``at``."""

    at: float
    in_rate: float
    try_rate: float
    out_rate: float
    pending: int


class _Buckets:
    __slots__ = ("counts", "seconds", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.seconds = [-1] * size  # which second each bucket currently holds
        self.total = 0

    def add(self, second: int, n: int) -> None:
        i = second % len(self.counts)
        if self.seconds[i] != second:
            self.seconds[i] = second
            self.counts[i] = 0
        self.counts[i] += n
        self.total += n

    def get(self, second: int) -> int:
        i = second % len(self.counts)
        return self.counts[i] if self.seconds[i] == second else 0


class RateMeter:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_window: int = max(WINDOWS),
        sample_every: float = SAMPLE_EVERY,
        keep: float = SERIES_KEEP,
    ) -> None:
        if max_window < 1 or sample_every <= 0 or keep < sample_every:
            raise ValueError("need max_window >= 1, sample_every > 0, keep >= sample_every")
        self._clock = clock
        self.max_window = max_window
        self.sample_every = float(sample_every)
        self.keep = float(keep)
        self._buckets = {kind: _Buckets(max_window + 1) for kind in RateKind}
        self._series: deque[RatePoint] = deque(maxlen=math.ceil(keep / sample_every))
        self._last_slot: int | None = None

    def add(self, kind: RateKind | str, n: int = 1) -> None:
        """Count ``n`` events of ``kind`` (``RateKind`` or its value ``"in"``/``"try"``/``"out"``) now."""
        if n:
            self._buckets[RateKind(kind)].add(math.floor(self._clock()), n)

    def total(self, kind: RateKind | str) -> int:
        """Events of ``kind`` since this meter was made."""
        return self._buckets[RateKind(kind)].total

    def rate(self, kind: RateKind | str, window: int = 5, now: float | None = None) -> float:
        """Average events per second over the last ``window`` seconds (1..max_window)."""
        if not 1 <= window <= self.max_window:
            raise ValueError(f"window must be 1..{self.max_window} seconds, got {window}")
        t = self._clock() if now is None else now
        second = math.floor(t)
        inside_oldest = 1.0 - (t - second)  # share of second (second - window) still in the window
        b = self._buckets[RateKind(kind)]
        count = sum(b.get(second - k) for k in range(window)) + inside_oldest * b.get(second - window)
        return count / window

    def rates(self, kind: RateKind | str, now: float | None = None) -> tuple[float, float, float]:
        """The 5 s, 15 s and 30 s averages."""
        t = self._clock() if now is None else now
        return (self.rate(kind, WINDOWS[0], t), self.rate(kind, WINDOWS[1], t), self.rate(kind, WINDOWS[2], t))

    def sample(self, now: float | None = None, pending: int = 0) -> RatePoint | None:
        """Record the chart point of the current 5 s slot; None if this slot already has one.

        ``pending`` is the queue's count of recipients still to send, supplied by the caller.
        """
        t = self._clock() if now is None else now
        slot = math.floor(t / self.sample_every)
        if self._last_slot is not None and slot <= self._last_slot:
            return None
        self._last_slot = slot
        window = max(1, min(self.max_window, round(self.sample_every)))
        point = RatePoint(
            at=slot * self.sample_every,
            in_rate=self.rate(RateKind.IN, window, t),
            try_rate=self.rate(RateKind.TRY, window, t),
            out_rate=self.rate(RateKind.OUT, window, t),
            pending=pending,
        )
        self._series.append(point)
        return point

    def series(self, now: float | None = None) -> list[RatePoint]:
        """The chart points of the last hour, oldest first (gaps where nobody sampled)."""
        t = self._clock() if now is None else now
        return [p for p in self._series if p.at > t - self.keep]
