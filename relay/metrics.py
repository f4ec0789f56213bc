"""Prometheus metrics of one App (``GET /metrics``): a private registry, no global state.

- Counters are bumped where the facts are (submission, scheduler, feedback ingestion): one
  ``inc()`` on a child bound in advance, so the SMTP hot path pays a lock and an add.
- Gauges that describe live state (pending recipients per site, spool entries) are read at scrape
  time by a custom collector; :meth:`Metrics.render` counts the spool in a thread first.
- Label values are bounded: ``api_user`` by the configured users, ``reason``/``outcome``/``kind``/
  ``category``/``op`` by the fixed vocabularies below (anything else becomes ``other``), ``site`` by
  :attr:`Metrics.max_sites` (the sites with most pending recipients, the rest summed as ``other``).
  Never a recipient or an email_id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from storage.timing import OPS

#: the deciding policy of a refused RCPT (``policies``' unit names)
REFUSED_REASONS = ("syntax", "block", "bounce", "complaint", "unsubscribe")
DELIVERY_OUTCOMES = ("delivered", "deferred", "failed")
FEEDBACK_KINDS = ("dsn", "arf")
#: DSN categories (``relay.rules.types.Category``) and ARF feedback types (RFC 5965 §7.3, RFC 6591)
FEEDBACK_CATEGORIES = ("server_error", "ip_rejection", "not_exist", "spam_rejected", "rejected", "others",
                       "abuse", "fraud", "virus", "other", "not-spam", "auth-failure")
OTHER = "other"
UNROUTED_SITE = "unrouted"  # recipients whose domain's MX is not resolved yet

PendingBySite = Callable[[], Iterable[tuple[str, int]]]


def _bounded(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else OTHER


class _LiveCollector(Collector):
    """Gauges evaluated at scrape time, on the event loop (they read the scheduler's state)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        spool = GaugeMetricFamily("mailrelay_spool_messages", "Messages in this node's spool (accepted, not yet "
                                  "finished)")
        spool.add_metric([], self.m.spool_count)
        yield spool
        pending = GaugeMetricFamily("mailrelay_queue_pending", "Recipients waiting for delivery, by destination "
                                    f"site (the {self.m.max_sites} largest; the rest as '{OTHER}')", labels=["site"])
        for site, n in self.m.pending_by_site():
            pending.add_metric([site], n)
        yield pending


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_sites: int = 50) -> None:
        self.max_sites = max_sites
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter("mailrelay_messages_accepted", "Messages answered 250 at the end of DATA",
                                ["api_user"], registry=r)
        refused = Counter("mailrelay_rcpt_refused", "Recipients refused at RCPT by a suppression or syntax policy",
                          ["reason"], registry=r)
        delivery = Counter("mailrelay_delivery", "Delivery attempt outcomes per recipient", ["outcome"], registry=r)
        self.feedback = Counter("mailrelay_feedback", "Bounces and complaints applied to a recipient of ours",
                                ["kind", "category"], registry=r)
        self.smtp_transaction = Histogram(
            "mailrelay_smtp_transaction_seconds", "Submission transactions from MAIL FROM to the reply after DATA",
            registry=r)
        storage = Histogram("mailrelay_storage_seconds", "Latency of storage calls", ["op"], registry=r)
        # children of the fixed vocabularies, bound once: exported as 0 from the start, no lookup per event
        self._refused = {v: refused.labels(v) for v in (*REFUSED_REASONS, OTHER)}
        self._delivery = {v: delivery.labels(v) for v in DELIVERY_OUTCOMES}
        self._storage = {v: storage.labels(v) for v in OPS}
        self.spool_count = 0
        self._count_spool: Callable[[], int] | None = None
        self._pending: PendingBySite = lambda: ()
        r.register(_LiveCollector(self))

    # region events (called where the facts are)
    def message_accepted(self, api_user: str) -> None:
        self.accepted.labels(api_user).inc()

    def rcpt_refused(self, policy: str) -> None:
        self._refused.get(policy, self._refused[OTHER]).inc()

    def delivery_outcome(self, outcome: str) -> None:
        self._delivery[outcome].inc()

    def feedback_applied(self, kind: str, category: str) -> None:
        self.feedback.labels(_bounded(kind, FEEDBACK_KINDS), _bounded(category, FEEDBACK_CATEGORIES)).inc()

    def storage_call(self, op: str, seconds: float) -> None:
        child = self._storage.get(op)
        if child is not None:
            child.observe(seconds)

    # endregion

    # region live state
    def watch(self, *, pending: PendingBySite | None = None, spool: Callable[[], int] | None = None) -> None:
        """``pending()`` yields (site, recipients) on the loop; ``spool()`` blocks (run in a thread)."""
        if pending is not None:
            self._pending = pending
        if spool is not None:
            self._count_spool = spool

    def pending_by_site(self) -> list[tuple[str, int]]:
        totals: dict[str, int] = {}
        for site, n in self._pending():
            totals[site] = totals.get(site, 0) + n
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
        top, rest = dict(ranked[: self.max_sites]), ranked[self.max_sites :]
        if rest:
            top[OTHER] = top.get(OTHER, 0) + sum(n for _, n in rest)
        return list(top.items())

    async def render(self) -> bytes:
        """The exposition text (the spool is counted in a thread, the rest read on the loop)."""
        if self._count_spool is not None:
            try:
                self.spool_count = await asyncio.to_thread(self._count_spool)
            except OSError:
                pass  # the last count stays; /readyz names the spool problem
        return generate_latest(self.registry)

    # endregion
