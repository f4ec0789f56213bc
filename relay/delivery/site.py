"""SiteQueue: one destination site (sorted MX host set) — its connections, rate and pause.

The ready deque is bounded: the scheduler offers items only while the site has room, so a
backlog stays in the scheduler as small metadata. Connections are reused across messages and
pooled here (``idle``); each dispatcher task owns at most one connection at a time.

Only SITE-scope outcomes reach :meth:`feedback`: they drive the AIMD rate and the pause state;
recipient- and message-scope outcomes never slow a site down (Postfix ``smtp_trouble.c``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.delivery.client import SmtpConnection
from relay.delivery.mx import MxPlan
from relay.delivery.state import DeliveryItem
from relay.delivery.throttle import AimdRate, SitePause, TokenBucket
from relay.delivery.types import SiteKey
from relay.rules.types import Classified, PauseReason, Signal


@dataclass(frozen=True)
class SiteLimits:
    max_connections: int = 10
    messages_per_connection: int = 100
    max_rate: float = 0.0  # 0 = unlimited until the site pushes back
    min_rate: float = 0.2
    rate_increase: float = 1.0
    rate_decrease: float = 0.5
    ready_max: int = 2000  # items queued for this site's connections
    pause_initial: float = 60.0
    pause_max: float = 3 * 86400.0


def _configured_bucket(limits: SiteLimits, clock: Callable[[], float]) -> TokenBucket | None:
    """A full bucket at the configured ``max_rate`` (None: unlimited until the site pushes back)."""
    return TokenBucket(limits.max_rate, max(1.0, limits.max_rate), clock) if limits.max_rate > 0 else None


@dataclass(eq=False)
class SiteQueue:
    key: SiteKey
    plan: MxPlan
    limits: SiteLimits
    clock: Callable[[], float]
    aimd: AimdRate
    bucket: TokenBucket | None
    pause: SitePause
    ready: deque[DeliveryItem] = field(default_factory=deque)
    idle: list[SmtpConnection] = field(default_factory=list)
    workers: set[asyncio.Task[None]] = field(default_factory=set)
    in_flight: int = 0
    operator_max_rate: float | None = None
    last_reply: str = ""

    @staticmethod
    def make(key: SiteKey, plan: MxPlan, limits: SiteLimits, clock: Callable[[], float]) -> SiteQueue:
        ceiling = limits.max_rate if limits.max_rate > 0 else 1_000_000.0
        aimd = AimdRate(start=ceiling, floor=limits.min_rate, ceiling=ceiling, add=limits.rate_increase,
                        mult=limits.rate_decrease, max_connections=limits.max_connections, clock=clock)
        bucket = _configured_bucket(limits, clock)
        pause = SitePause(initial=limits.pause_initial, maximum=limits.pause_max)
        return SiteQueue(key, plan, limits, clock, aimd, bucket, pause)

    # region capacity
    @property
    def has_room(self) -> bool:
        return len(self.ready) < self.limits.ready_max

    def paused(self) -> bool:
        return self.pause.is_paused(self.clock())

    def wanted_workers(self) -> int:
        return min(self.aimd.connections, self.limits.max_connections, len(self.ready) + self.in_flight)

    # endregion

    # region rate
    def _effective_rate(self) -> float | None:
        rate = self.aimd.rate
        if self.operator_max_rate is not None:
            rate = min(rate, self.operator_max_rate)
        return None if rate >= 1_000_000.0 else rate

    def token_delay(self) -> float:
        """Seconds to wait before the next message may go (0 = now)."""
        rate = self._effective_rate()
        if rate is None:
            return 0.0
        if self.bucket is None:
            self.bucket = TokenBucket(rate, max(1.0, rate), self.clock)
        elif self.bucket.rate != rate:
            self.bucket.set_rate(rate)
        return self.bucket.try_take()

    def set_operator_max_rate(self, rate: float | None) -> None:
        self.operator_max_rate = rate if rate and rate > 0 else None
        self.aimd.set_ceiling(self.operator_max_rate)

    # endregion

    def feedback(self, c: Classified, reply: str, measured_rate: float) -> float | None:
        """Apply a SITE-scope outcome; returns the pause end if the site is now paused."""
        self.last_reply = reply
        if c.signal in (Signal.RATE_LIMIT, Signal.CONN_LIMIT) and self.aimd.rate >= 1_000_000.0:
            # First push-back from a site we sent to unthrottled: start from what we actually sent.
            self.aimd.reset_rate(max(self.limits.min_rate, measured_rate))
        if c.signal is not Signal.NONE:
            self.aimd.on_signal(c.signal)
        if c.pause is not None:
            return self.pause.pause(c.pause, reply, self.clock())
        return None

    def on_delivered(self) -> None:
        self.aimd.on_accept()
        self.pause.on_accept()  # a delivery ends the streak of consecutive pauses

    def recover(self) -> None:
        """The operator's Recover: end the pause and start over at the configured rate, with a full
        bucket (a push-back since then had cut it, possibly to the floor); if the site pushes back
        again, the rate adapts again."""
        self.pause.recover(self.clock())
        self.aimd.reset_rate(self.aimd.ceiling)
        self.bucket = _configured_bucket(self.limits, self.clock)

    def admin_pause_reason(self) -> PauseReason | None:
        return self.pause.reason if self.paused() else None
