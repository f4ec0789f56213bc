"""ScheduledQueue: the queue a user sees and controls — one per (API_USER, receiving domain).

It owns what is visible: pending count, In/Try/Out rates, the operator's pause and maximum rate,
and the items held back while it (or its site) is paused. Connections, the adaptive rate and
the pause *cause* belong to the destination site (``site.py``), shared by every queue whose
domain has the same MX host set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from relay.delivery.rates import RateMeter
from relay.delivery.state import DeliveryItem
from relay.delivery.types import SiteKey


@dataclass(eq=False)
class ScheduledQueue:
    api_user: str
    domain: str
    meter: RateMeter
    pending: int = 0  # recipients not finished (waiting, held, ready or in flight)
    admin_paused: bool = False
    max_rate: float | None = None  # operator's cap for the site of this queue (msgs/s)
    site: SiteKey | None = None  # last known site of the domain
    held: list[DeliveryItem] = field(default_factory=list)  # parked while paused

    @property
    def name(self) -> str:
        return f"{self.api_user}@{self.domain}"

    @staticmethod
    def make(api_user: str, domain: str, clock: Callable[[], float]) -> ScheduledQueue:
        return ScheduledQueue(api_user, domain, RateMeter(clock))
