"""QueueAdmin: the read model and the controls of the queues, for the CLI and the HTTP API.

A queue is (API_USER, receiving domain). Its status shows the pause of its *site* when the site
refuses us (reason, the reply that caused it, the next send time; a pause of two days or more is
flagged ``long_pause``), or the operator's own pause.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from relay.delivery.queue import ScheduledQueue
from relay.delivery.scheduler import Scheduler
from relay.metrics import UNROUTED_SITE

WINDOWS = (5, 15, 30)


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None


@dataclass(frozen=True)
class QueueView:
    api_user: str
    domain: str
    status: str  # "active" | "paused" | "idle"
    pending: int
    in_rate: dict[str, float]
    try_rate: dict[str, float]
    out_rate: dict[str, float]
    pause_reason: str | None
    pause_reply: str | None
    next_send_time: str | None
    long_pause: bool
    max_rate: float | None
    current_rate: float | None
    site: str | None

    def to_json(self) -> dict[str, Any]:
        # shallow: the rate dicts are made for this view alone (asdict's deep copy costs a third of
        # rendering 1,000 queues)
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Recovered:
    """A recovered queue, and how many waiting recipients the recover made due at once."""

    view: QueueView
    released: int

    def to_json(self) -> dict[str, Any]:
        return {**self.view.to_json(), "released": self.released}


class QueueError(LookupError):
    """No such queue (the message names it)."""


class QueueAdmin:
    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler

    def _view(self, q: ScheduledQueue) -> QueueView:
        now = self.s.d.clock()
        site = self.s.sites.get(q.site) if q.site else None
        reason = reply = None
        until: float | None = None
        long_pause = False
        if q.admin_paused:
            reason, reply = "admin", "paused by an operator"
        elif site is not None and (state := site.pause.state(now)) is not None:
            reason, reply, until, long_pause = str(state.reason), state.reply, state.next_send_at, state.long
        status = "paused" if reason else ("active" if q.pending else "idle")
        rate = None
        if site is not None:
            r = site.aimd.rate
            rate = None if r >= 1_000_000.0 else round(r, 3)
        return QueueView(
            api_user=q.api_user, domain=q.domain, status=status, pending=q.pending,
            in_rate={f"{w}s": round(q.meter.rate("in", w), 3) for w in WINDOWS},
            try_rate={f"{w}s": round(q.meter.rate("try", w), 3) for w in WINDOWS},
            out_rate={f"{w}s": round(q.meter.rate("out", w), 3) for w in WINDOWS},
            pause_reason=reason, pause_reply=reply, next_send_time=_iso(until),
            long_pause=long_pause, max_rate=q.max_rate, current_rate=rate,
            site=site.key.name if site else None,
        )

    def pending_by_site(self) -> list[tuple[str, int]]:
        """(site name, pending recipients) per queue, for the ``mailrelay_queue_pending`` gauge; a queue
        whose domain is not routed yet counts as site ``unrouted``."""
        return [(q.site.name if q.site else UNROUTED_SITE, q.pending) for q in self.s.queues.values() if q.pending]

    def _get(self, api_user: str, domain: str) -> ScheduledQueue:
        q = self.s.find_queue(api_user, domain)
        if q is None:
            raise QueueError(f"no queue for API_USER {api_user!r} and domain {domain!r}")
        return q

    def list(self, api_user: str | None = None) -> list[QueueView]:
        qs = sorted(self.s.queues.values(), key=lambda q: (q.api_user, q.domain))
        return [self._view(q) for q in qs if api_user is None or q.api_user == api_user]

    def show(self, api_user: str, domain: str, limit: int = 100) -> dict[str, Any]:
        q = self._get(api_user, domain)
        waiting = self.s.waiting_items(q)[:limit]
        return {
            "queue": self._view(q).to_json(),
            "messages": [{"email_id": i.email_id, "recipient": i.recipient, "attempts": i.attempts,
                          "next_attempt": _iso(i.next_at), "last_reason": i.last_reason} for i in waiting],
            "series": [list(p) for p in q.meter.series()],
        }

    def pause(self, api_user: str, domain: str) -> QueueView:
        q = self._get(api_user, domain)
        self.s.pause_queue(q)
        return self._view(q)

    def resume(self, api_user: str, domain: str) -> QueueView:
        q = self._get(api_user, domain)
        self.s.resume_queue(q)
        return self._view(q)

    def recover(self, api_user: str, domain: str) -> Recovered:
        """The one Recover (CLI, HTTP API, console): resume the queue and send everything waiting now."""
        q = self._get(api_user, domain)
        released = self.s.recover_queue(q)
        return Recovered(self._view(q), released)

    def set_rate(self, api_user: str, domain: str, rate: float | None) -> QueueView:
        q = self._get(api_user, domain)
        self.s.set_queue_rate(q, rate)
        return self._view(q)
