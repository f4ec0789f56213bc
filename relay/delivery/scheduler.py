"""Scheduler: due times, routing to sites, and the only place outcomes change delivery state.

- Accepted recipients (from intake, or from the spool at start-up) wait in one due-time heap as
  small :class:`DeliveryItem` records; bodies stay in the spool.
- A due item is routed: queue paused → held; MX resolved (in the background, per domain) →
  NullMx/NXDOMAIN → invalid, temporary DNS failure → retry; otherwise offered to its site's
  bounded ready deque (full → tried again in a second).
- Sites run dispatcher tasks (``dispatcher.py``) that report every outcome to :meth:`report`:
  delivered / invalid / retry with backoff until the maximum age; site-scope outcomes feed the
  site's AIMD rate and pause; "user unknown" enters the bounce list.
- Time comes from an injected clock; :meth:`tick` does one pass, so tests drive it without sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from relay.delivery.dispatcher import DispatchContext, run_dispatcher
from relay.delivery.mx import DnsPermFail, DnsTempFail, MxPlan, NullMx
from relay.delivery.queue import ScheduledQueue
from relay.delivery.recorder import OutcomeRecorder
from relay.delivery.retry import RetryPolicy
from relay.delivery.site import SiteLimits, SiteQueue
from relay.delivery.state import DeliveryItem, MessageState, items_from_record, load_pending
from relay.delivery.types import SiteKey
from relay.metrics import Metrics
from relay.rules.types import AttemptResult, Classified, Outcome, Scope, Stage
from relay.spool import Spool
from storage.errors import StorageError
from storage.records import SubmissionRecord, SubStatus

log = logging.getLogger("mailrelay.delivery.scheduler")

@dataclass
class SchedulerDeps:
    spool: Spool
    recorder: OutcomeRecorder
    plan_for: Callable[[str], object]  # async domain -> MxPlan | NullMx | DnsTempFail | DnsPermFail
    retry: RetryPolicy
    limits: SiteLimits
    clock: Callable[[], float]
    max_in_flight: int = 20000
    metrics: Metrics = field(default_factory=Metrics)


class Scheduler:
    #: seconds before the first retry of an outcome write that the database refused, and the longest wait
    record_backoff: tuple[float, float] = (0.2, 10.0)

    def __init__(self, deps: SchedulerDeps, dispatch: DispatchContext) -> None:
        self.d = deps
        self.ctx = dispatch
        self.ctx.report = self.report
        self.ctx.stopping = lambda: self._stopping
        self.ctx.clock = deps.clock
        self.messages: dict[str, MessageState] = {}
        self.queues: dict[tuple[str, str], ScheduledQueue] = {}
        self.sites: dict[SiteKey, SiteQueue] = {}
        self._heap: list[tuple[float, int, DeliveryItem]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._resolving: dict[str, list[DeliveryItem]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._holding: set[ScheduledQueue] = set()
        self._paused_sites: set[SiteQueue] = set()  # logged as paused, not yet as resumed
        self._stopping = False
        self._last_sample = 0.0
        self.pending_recipients = 0  # not finished, over every queue (the free-space reserve counts them)
        self._unsaved: set[str] = set()  # messages whose delivery state could not be written yet
        self._last_resave = 0.0

    # region intake
    def queue_for(self, item: DeliveryItem) -> ScheduledQueue:
        q = self.queues.get(item.queue_key)
        if q is None:
            q = self.queues[item.queue_key] = ScheduledQueue.make(item.api_user, item.domain, self.d.clock)
        return q

    def _add_message(self, state: MessageState, *, arrived: bool) -> None:
        self.messages[state.email_id] = state
        for item in state.items.values():
            q = self.queue_for(item)
            q.pending += 1
            self.pending_recipients += 1
            if arrived:
                q.meter.add("in")
            self._push(item)

    async def enqueue(self, record: SubmissionRecord) -> None:
        """Intake hook: a message was just made durable."""
        state = items_from_record(record)
        now = self.d.clock()
        for item in state.items.values():
            item.next_at = now
            item.checked_at = item.first_seen  # RCPT time: the lists were checked just now
        if state.items:
            self._add_message(state, arrived=True)
            self._wake.set()

    async def restore(self) -> int:
        """Start-up: reschedule everything still pending in the spool. Returns recipients restored."""
        states = await asyncio.to_thread(lambda: list(load_pending(self.d.spool)))
        n = 0
        for st in states:
            self._add_message(st, arrived=False)
            n += len(st.items)
        if n:
            log.info("restored pending deliveries", extra={"event": "delivery_restored", "recipients": n})
        return n

    def _push(self, item: DeliveryItem) -> None:
        heapq.heappush(self._heap, (item.next_at, next(self._seq), item))

    # endregion

    # region the loop
    def in_flight(self) -> int:
        routing = sum(len(v) for v in self._resolving.values())
        return routing + sum(len(s.ready) + s.in_flight for s in self.sites.values())

    async def tick(self) -> None:
        now = self.d.clock()
        self._log_site_resumes()
        self._release_holds(now)
        budget = self.d.max_in_flight - self.in_flight()
        while self._heap and self._heap[0][0] <= now and budget > 0:
            _, _, item = heapq.heappop(self._heap)
            if item.done:
                continue
            budget -= 1
            self._route(item, now)
        self._spawn_dispatchers()
        await self._resave(now)
        if now - self._last_sample >= 5.0:
            self._last_sample = now
            for q in self.queues.values():
                q.meter.sample(now, q.pending)

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    async def run(self) -> None:
        while not self._stopping:
            await self.tick()
            nxt = self.next_due()
            timeout = 1.0 if nxt is None else min(1.0, max(0.0, nxt - self.d.clock()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def drain(self, timeout: float = 30.0) -> None:
        """Tests: wait until routing and dispatchers are idle."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
                self._spawn_dispatchers()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for site in self.sites.values():
            for conn in site.idle:
                await conn.close()
            site.idle.clear()
        if self.ctx.outgoing is not None:
            await self.ctx.outgoing.close()

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception(), extra={"event": "delivery_task_error"})
        self._wake.set()

    # endregion

    # region routing
    def _hold(self, q: ScheduledQueue, item: DeliveryItem) -> None:
        q.held.append(item)
        self._holding.add(q)

    def _queue_blocked(self, q: ScheduledQueue) -> bool:
        if q.admin_paused:
            return True
        site = self.sites.get(q.site) if q.site else None
        return site is not None and site.paused()

    def _release_holds(self, now: float) -> None:
        for q in list(self._holding):
            if self._queue_blocked(q):
                continue
            self._holding.discard(q)
            for item in q.held:
                item.next_at = now
                self._push(item)
            q.held.clear()

    def _route(self, item: DeliveryItem, now: float) -> None:
        q = self.queue_for(item)
        if self._queue_blocked(q):
            self._hold(q, item)
            return
        waiting = self._resolving.get(item.domain)
        if waiting is not None:
            waiting.append(item)
            return
        self._resolving[item.domain] = [item]
        self._track(self._resolve(item.domain))

    async def _resolve(self, domain: str) -> None:
        try:
            plan = await self.d.plan_for(domain)  # type: ignore[misc]
        except Exception as e:  # a resolver bug must not lose items: treat as temporary
            log.exception("resolver error", extra={"event": "dns_error", "domain": domain})
            plan = DnsTempFail(domain, f"resolver error: {e}")
        items = self._resolving.pop(domain, [])
        now = self.d.clock()
        if isinstance(plan, MxPlan):
            site = self.sites.get(plan.site)
            if site is None:
                site = self.sites[plan.site] = SiteQueue.make(plan.site, plan, self.d.limits, self.d.clock)
            site.plan = plan
            for item in items:
                q = self.queue_for(item)
                q.site = plan.site
                if q.max_rate is not None:
                    site.set_operator_max_rate(q.max_rate)
                if site.paused() or q.admin_paused:
                    self._hold(q, item)
                elif site.has_room:
                    site.ready.append(item)
                else:
                    item.next_at = now + 1.0
                    self._push(item)
            self._spawn_dispatchers()
            return
        permanent = isinstance(plan, NullMx | DnsPermFail)
        text = ("permanent: " if permanent else "") + str(getattr(plan, "why", plan))
        result = AttemptResult(Stage.DNS, None, None, text)
        c = self.ctx.rules.classify(result)
        for item in items:
            await self.report(item, result, c, None)

    def _spawn_dispatchers(self) -> None:
        if self._stopping:
            return
        for site in self.sites.values():
            if not site.ready or site.paused():
                continue
            want = site.wanted_workers()
            while len(site.workers) < want:
                task = asyncio.ensure_future(run_dispatcher(site, self.ctx))
                site.workers.add(task)
                self._tasks.add(task)
                task.add_done_callback(site.workers.discard)
                task.add_done_callback(self._task_done)

    # endregion

    # region outcomes
    async def report(self, item: DeliveryItem, result: AttemptResult, c: Classified | None,
                     site: SiteQueue | None, policy_sub_status: SubStatus | None = None) -> None:
        now = self.d.clock()
        q = self.queue_for(item)
        rec = self.d.recorder
        if result.stage is Stage.POLICY or c is None:
            await self._record(item, lambda: rec.invalid(item, result, None, policy_sub_status or SubStatus.BLACKLIST,
                                                         result.text, now))
            self._outcome("failed", item, result, result.text, now)
            await self._done(item)
            return
        if result.stage is not Stage.DNS:
            q.meter.add("try")
        reply = result.reply_line() if result.code is not None else result.text
        pause_end: float | None = None
        if site is not None and c.scope is Scope.SITE and c.outcome is not Outcome.DELIVERED:
            pause_end = site.feedback(c, reply, q.meter.rate("try", 5))
            if pause_end is not None:
                self._park_site(site)
                if site not in self._paused_sites:
                    self._paused_sites.add(site)
                    log.warning("paused", extra={"event": "paused", "site": site.key.name, "reason": str(c.pause),
                                                 "reply": reply, "until": round(pause_end, 3)})
        if c.outcome is Outcome.DELIVERED:
            q.meter.add("out")
            if site is not None:
                site.on_delivered()
            await self._record(item, lambda: rec.delivered(item, result, c, now))
            self._outcome("delivered", item, result, reply, now)
            await self._done(item)
        elif c.outcome is Outcome.PERMFAIL:
            await self._record(item, lambda: rec.invalid(item, result, c, c.sub_status, reply, now))
            if c.adds_bounce:
                hosts = site.key.hosts if site is not None else ()
                await self._record(item, lambda: rec.not_exist(item, hosts, reply, now))
            self._outcome("failed", item, result, reply, now)
            await self._done(item)
        else:
            item.attempts += 1
            item.last_reason = reply
            nxt = self.d.retry.next_time(now, item.attempts, item.first_seen)
            if nxt is None:
                await self._record(item, lambda: rec.invalid(item, result, c, c.sub_status,
                                                             f"retries exhausted: {reply}", now))
                self._outcome("failed", item, result, f"retries exhausted: {reply}", now)
                await self._done(item)
                return
            await self._record(item, lambda: rec.retrying(item, result, c, reply, now))
            item.next_at = max(nxt, pause_end or 0.0)
            self._outcome("deferred", item, result, reply, now, retry_at=item.next_at)
            self._push(item)
            await self._save(item.email_id)

    def _outcome(self, outcome: str, item: DeliveryItem, result: AttemptResult, reply: str, now: float,
                 retry_at: float | None = None) -> None:
        """One log line and one counter per recorded outcome (``item.attempts`` counts the failed
        attempts so far: a deferral has already added its own)."""
        self.d.metrics.delivery_outcome(outcome)
        attempt = item.attempts if outcome == "deferred" else item.attempts + 1
        fields: dict[str, object] = {
            "event": outcome, "email_id": item.email_id, "recipient": item.recipient, "api_user": item.api_user,
            "mx_host": result.mx_host, "mx_ip": result.mx_ip, "reply": reply, "stage": result.stage.value,
            "delay": round(max(0.0, now - item.first_seen), 3), "attempt": attempt}
        if retry_at is not None:
            fields["retry_in"] = round(max(0.0, retry_at - now), 3)
        log.info(outcome, extra=fields)

    async def _record(self, item: DeliveryItem, write: Callable[[], Awaitable[None]]) -> None:
        """Write an attempt's outcome, retrying while the database refuses. The attempt happened and
        must not be made again; the message stays in the spool until its outcome is written, so a
        stop meanwhile leaves it for the next start (at least once, never lost or stuck)."""
        delay, longest = self.record_backoff
        while True:
            try:
                await write()
                return
            except StorageError as e:
                if self._stopping:
                    raise
                log.warning(f"outcome not recorded ({e}); retrying in {delay:.1f} s",
                            extra={"event": "outcome_record_retry", "email_id": item.email_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    def _park_site(self, site: SiteQueue) -> None:
        """The site paused: its ready items wait (held by their queues) until it resumes."""
        while site.ready:
            item = site.ready.popleft()
            self._hold(self.queue_for(item), item)

    async def _done(self, item: DeliveryItem) -> None:
        item.done = True
        self.queue_for(item).pending -= 1
        self.pending_recipients -= 1
        state = self.messages.get(item.email_id)
        if state is None:
            return
        if state.finished:
            del self.messages[item.email_id]
            self._unsaved.discard(item.email_id)
            await self.d.spool.remove(item.email_id, has_meta=state.has_meta)
        else:
            await self._save(item.email_id)

    async def _save(self, email_id: str) -> None:
        """Write a message's delivery state. If the disk is full, delivery goes on (the state in
        memory is the truth while the process runs) and the write is retried from :meth:`tick`
        as space returns: a crash meanwhile only means an earlier retry or a repeated attempt."""
        state = self.messages.get(email_id)
        if state is None:
            self._unsaved.discard(email_id)
            return
        state.has_meta = True
        try:
            await asyncio.to_thread(self.d.spool.write_meta_sync, email_id, state.encode())
        except OSError as e:
            if email_id not in self._unsaved:
                log.warning(f"delivery state not written ({e}); retrying", extra={
                    "event": "delivery_meta_retry", "email_id": email_id})
            self._unsaved.add(email_id)
        else:
            self._unsaved.discard(email_id)

    async def _resave(self, now: float) -> None:
        """Retry the delivery-state writes that failed (disk full), at most every 2 s."""
        if not self._unsaved or now - self._last_resave < 2.0:
            return
        self._last_resave = now
        for email_id in list(self._unsaved):
            await self._save(email_id)
            if email_id in self._unsaved:
                return  # still no space: the next pass tries again

    # endregion

    # region operator controls (used by admin.py)
    def find_queue(self, api_user: str, domain: str) -> ScheduledQueue | None:
        return self.queues.get((api_user, domain.lower()))

    def pause_queue(self, q: ScheduledQueue) -> None:
        if not q.admin_paused:
            log.info("paused", extra={"event": "paused", "api_user": q.api_user, "domain": q.domain,
                                      "reason": "admin", "pending": q.pending})
        q.admin_paused = True

    def _log_admin_resume(self, q: ScheduledQueue, reason: str) -> None:
        if q.admin_paused:
            log.info("resumed", extra={"event": "resumed", "api_user": q.api_user, "domain": q.domain,
                                       "reason": reason, "pending": q.pending})

    def resume_queue(self, q: ScheduledQueue) -> None:
        self._log_admin_resume(q, "admin")
        q.admin_paused = False
        self._wake.set()

    def recover_queue(self, q: ScheduledQueue) -> int:
        """Send now: lift the operator's and the site's pause and make every recipient of the queue
        that waits (held by a pause, or on its retry timer) due at once. Returns how many."""
        now = self.d.clock()
        self._log_admin_resume(q, "recover")
        q.admin_paused = False
        site = self.sites.get(q.site) if q.site else None
        if site is not None:
            site.recover()
            self._log_site_resumes("recover")
        key = (q.api_user, q.domain)
        released = len(q.held)
        heap: list[tuple[float, int, DeliveryItem]] = []
        for at, seq, item in self._heap:
            if not item.done and item.queue_key == key:
                released += 1
                if at > now:  # the item keeps its one heap entry, with the new time
                    item.next_at = at = now
            heap.append((at, seq, item))
        heapq.heapify(heap)
        self._heap = heap
        self._release_holds(now)
        self._wake.set()
        return released

    def _log_site_resumes(self, reason: str = "pause ended") -> None:
        for site in [s for s in self._paused_sites if not s.paused()]:
            self._paused_sites.discard(site)
            log.info("resumed", extra={"event": "resumed", "site": site.key.name, "reason": reason})

    def set_queue_rate(self, q: ScheduledQueue, rate: float | None) -> None:
        q.max_rate = rate if rate and rate > 0 else None
        site = self.sites.get(q.site) if q.site else None
        if site is not None:
            site.set_operator_max_rate(q.max_rate)

    def waiting_items(self, q: ScheduledQueue) -> list[DeliveryItem]:
        items = [it for _, _, it in self._heap if not it.done and it.queue_key == (q.api_user, q.domain)]
        return sorted([*items, *q.held], key=lambda i: i.next_at)

    # endregion
