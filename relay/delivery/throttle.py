"""Per-site throttling: token bucket, AIMD rate and connection window, and the pause state.

What it does:
- :class:`TokenBucket` spaces messages at ``rate`` per second with a ``burst``.
- :class:`AimdRate` is the adaptive send rate of a site (SPEC §5, TCP's additive increase /
  multiplicative decrease) and its connection window (Postfix ``qmgr_feedback.c`` slow start).
- :class:`SitePause` is the pause with a reason, the reply that caused it and the next send
  time; consecutive pauses back off exponentially; Recover resumes at once (Postfix's throttled
  queue carries its ``dsn``: why it is throttled).

Only SITE-scope outcomes may reach these classes (``classify.py`` guarantees which replies are
site-scoped); recipient and message failures never slow a site.

Pure: all time comes from an injected clock (float seconds) or an explicit ``now``; nothing
sleeps, nothing does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from relay.rules.types import PauseReason, Signal

Clock = Callable[[], float]

__all__ = ["AimdRate", "Clock", "PauseState", "SitePause", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; one token per message."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        _check_rate(rate, burst)
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        self._tokens = self._burst  # a fresh bucket may send a burst at once
        self._last = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:  # a clock that steps back adds nothing (and takes nothing)
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._last = now

    def try_take(self) -> float:
        """0.0 if a token was taken; else the seconds until one will be available (none taken)."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        """Change the rate (and burst); tokens earned so far at the old rate are kept."""
        self._refill()
        new_burst = self._burst if burst is None else float(burst)
        _check_rate(rate, new_burst)
        self._rate = float(rate)
        self._burst = new_burst
        self._tokens = min(self._tokens, self._burst)


def _check_rate(rate: float, burst: float) -> None:
    if not rate > 0:
        raise ValueError(f"token bucket rate must be > 0, got {rate}")
    if not burst >= 1:
        raise ValueError(f"token bucket burst must be >= 1, got {burst}")


class AimdRate:
    """Adaptive rate (messages/s) and connection window of one site.

    Increase (per accepted message, :meth:`on_accept`): ``rate += min(add / max(rate, 1), rate)``.
    Above 1 msg/s that is TCP congestion avoidance: ``rate`` accepts arrive per second, so the rate
    grows by about ``add`` msgs/s for every second of successful sending. Below 1 msg/s (after
    heavy push-back) the ``min(..., rate)`` makes it at most double per accepted message, like
    slow start, instead of jumping from the floor straight to ``add``.

    Decrease (:meth:`on_signal`): RATE_LIMIT -> ``rate *= mult``; CONN_LIMIT -> the same, and the
    connection window halves (at least 1); REPUTATION and NONE change nothing (the pause handles
    reputation). With a clock, at most one decrease of each kind per ``decrease_hold`` seconds:
    the replies of one burst (every in-flight message gets the same 421) count once, as TCP
    halves once per window, not once per lost segment.

    Bounds: ``floor <= rate <= ceiling`` always. The operator's maximum (:meth:`set_ceiling`) caps
    the effective :attr:`rate` on top, and wins even below ``floor``; it can change at any time.

    Connections (:attr:`connections`): the window starts at ``initial_connections`` (1: a site we
    know nothing about gets one connection, TCP slow start) and grows by ``1/window`` per accepted
    message — one more connection per window's worth of deliveries (Postfix's positive feedback
    ``1/N``) — up to ``max_connections``.
    """

    def __init__(
        self,
        start: float,
        floor: float,
        ceiling: float,
        add: float = 1.0,
        mult: float = 0.5,
        *,
        max_connections: int = 10,
        initial_connections: int = 1,
        clock: Clock | None = None,
        decrease_hold: float = 2.0,
    ) -> None:
        if not 0 < floor <= ceiling:
            raise ValueError(f"need 0 < floor <= ceiling, got floor={floor} ceiling={ceiling}")
        if not 0 < mult < 1:
            raise ValueError(f"mult must be in (0, 1), got {mult}")
        if add < 0:
            raise ValueError(f"add must be >= 0, got {add}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.floor = float(floor)
        self.ceiling = float(ceiling)
        self.add = float(add)
        self.mult = float(mult)
        self.max_connections = int(max_connections)
        self.decrease_hold = float(decrease_hold)
        self._clock = clock
        self._rate = self._clamp(start)
        self._op_max: float | None = None
        self._window = float(max(1, min(initial_connections, self.max_connections)))
        self._last_rate_cut = -math.inf
        self._last_conn_cut = -math.inf

    def _clamp(self, rate: float) -> float:
        return min(self.ceiling, max(self.floor, float(rate)))

    def _cap(self) -> float:
        return self.ceiling if self._op_max is None else min(self.ceiling, self._op_max)

    @property
    def rate(self) -> float:
        """The rate to send at now (messages/s), the operator's maximum applied."""
        return self._rate if self._op_max is None else min(self._rate, self._op_max)

    @property
    def operator_max(self) -> float | None:
        return self._op_max

    @property
    def connections(self) -> int:
        return max(1, int(self._window))

    def set_ceiling(self, op_max_rate: float | None) -> None:
        """The operator's maximum rate (None or <= 0: no operator cap)."""
        self._op_max = float(op_max_rate) if op_max_rate and op_max_rate > 0 else None

    def reset_rate(self, rate: float) -> None:
        """Start over from a measured rate (e.g. first push-back of a site sent to unthrottled)."""
        self._rate = self._clamp(rate)

    def on_accept(self) -> None:
        cap = self._cap()
        if self._rate < cap:
            self._rate = min(cap, self._rate + min(self.add / max(self._rate, 1.0), self._rate))
        if self._window < self.max_connections:
            self._window = min(float(self.max_connections), self._window + 1.0 / self._window)

    def on_signal(self, signal: Signal) -> None:
        if signal in (Signal.RATE_LIMIT, Signal.CONN_LIMIT) and self._may_cut("_last_rate_cut"):
            # Cut from what we actually send (the operator's cap may be below our own rate).
            self._rate = max(self.floor, self.rate * self.mult)
        if signal is Signal.CONN_LIMIT and self._may_cut("_last_conn_cut"):
            self._window = float(max(1, self.connections // 2))

    def _may_cut(self, attr: str) -> bool:
        if self._clock is None:
            return True
        now = self._clock()
        if now - getattr(self, attr) < self.decrease_hold:
            return False
        setattr(self, attr, now)
        return True


@dataclass(frozen=True, slots=True)
class PauseState:
    """What the queue view shows about a paused site."""

    reason: PauseReason
    reply: str  # the reply that caused it ("" for an operator pause)
    since: float
    next_send_at: float | None  # None: paused by an operator until resumed
    long: bool  # the pause lasts >= long_after (2 days by default): shown as a long pause
    consecutive: int  # pauses in a row without a delivery in between


class SitePause:
    """Pause state machine of one site.

    :meth:`pause` (a SITE reply with a pause reason) pauses until ``now + delay`` where delay is
    ``initial * factor**k`` for the k-th consecutive pause (1 min, 2, 4, ... capped at
    ``maximum``, 3 days). Replies that arrive while already paused (the rest of the in-flight
    burst) do not escalate it. A delivery (:meth:`on_accept`) ends the streak. :meth:`recover`
    resumes at once and resets everything, the operator pause included.
    """

    def __init__(
        self,
        initial: float = 60.0,
        maximum: float = 3 * 86400.0,
        factor: float = 2.0,
        long_after: float = 2 * 86400.0,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial}, {maximum}")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.initial = float(initial)
        self.maximum = float(maximum)
        self.factor = float(factor)
        self.long_after = float(long_after)
        self._until = -math.inf
        self._since = 0.0
        self._reason: PauseReason | None = None
        self._reply = ""
        self._consecutive = 0
        self._admin = False
        self._admin_reply = ""
        self._admin_since = 0.0

    # region queries
    def is_paused(self, now: float) -> bool:
        return self._admin or now < self._until

    @property
    def reason(self) -> PauseReason | None:
        """ADMIN while an operator pause holds, else the last automatic pause's reason (which may
        have expired: ask :meth:`is_paused` first)."""
        return PauseReason.ADMIN if self._admin else self._reason

    @property
    def reply(self) -> str:
        return self._admin_reply if self._admin else self._reply

    @property
    def until(self) -> float | None:
        """End of the last automatic pause, past or future (None if none was ever set)."""
        return None if self._reason is None else self._until

    @property
    def next_send_at(self) -> float | None:
        """End of the automatic pause (None when none was ever set or an operator pause holds)."""
        if self._admin or self._reason is None:
            return None
        return self._until

    @property
    def consecutive(self) -> int:
        return self._consecutive

    def delay_for(self, k: int) -> float:
        """Length of the k-th consecutive pause (k >= 0)."""
        if k >= 64 or self.initial * self.factor**k >= self.maximum:  # no overflow for a long streak
            return self.maximum
        return self.initial * self.factor**k

    def state(self, now: float) -> PauseState | None:
        if self._admin:
            return PauseState(PauseReason.ADMIN, self._admin_reply, self._admin_since, None, False,
                              self._consecutive)
        if self._reason is None or now >= self._until:
            return None
        return PauseState(self._reason, self._reply, self._since, self._until,
                          self._until - self._since >= self.long_after, self._consecutive)

    # endregion

    # region transitions
    def pause(self, reason: PauseReason, reply: str, now: float) -> float:
        """Pause for ``reason`` because of ``reply``; returns the next send time."""
        if reason is PauseReason.ADMIN:
            raise ValueError("operator pauses go through admin_pause()")
        if now < self._until:
            return self._until  # the same push-back seen again by another in-flight message
        self._since = now
        self._until = now + self.delay_for(self._consecutive)
        self._consecutive += 1
        self._reason = reason
        self._reply = reply
        return self._until

    def on_accept(self) -> None:
        """A delivery went through: the next pause starts again from ``initial``."""
        self._consecutive = 0

    def recover(self, now: float) -> None:
        """Resume now (the console's Recover button); resets the backoff and any operator pause."""
        self._until = now
        self._consecutive = 0
        self._reason = None
        self._reply = ""
        self._admin = False
        self._admin_reply = ""

    def admin_pause(self, reply: str = "", now: float = 0.0) -> None:
        self._admin = True
        self._admin_reply = reply
        self._admin_since = now

    def admin_resume(self) -> None:
        """End the operator pause; an automatic pause still running keeps going."""
        self._admin = False
        self._admin_reply = ""

    # endregion
