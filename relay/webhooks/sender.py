"""The per-node webhook sender: claims due events from the outbox, POSTs them, settles them.

At least once: an event leaves the outbox only after its endpoint answered 2xx; a node that dies
holding events loses its lease on them (``LEASE``) and they go again (at start-up a node releases
its own claims at once). A recipient's later event is never claimed before its earlier one was
acknowledged (the claim query's rule), so each endpoint sees a recipient's events in order.

Per endpoint: at most ``concurrency`` POSTs in flight from this node, ``batch`` events per POST;
a failed POST backs the whole endpoint off (exponential, with jitter, up to ``retry_max``); one
failing for ``disable_after`` is disabled with the reason (``mailrelay webhooks show``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import aiohttp

from relay.config import WebhooksConfig, parse_duration
from relay.webhook_destination import PublicOnlyResolver, check_host
from relay.webhooks import payload
from storage.errors import StorageError
from storage.protocols import Storage
from storage.records import utcnow
from storage.webhooks import Delivered, OutboxEvent, Webhook

log = logging.getLogger("mailrelay.webhooks")

LEASE = timedelta(minutes=5)  # far above any POST's timeout: a live node never loses its claim
CLAIM_LIMIT = 500
MAX_IN_FLIGHT = 256  # POSTs in flight per node, all endpoints together
QUEUE_ROUNDS = 4  # POSTs waiting per endpoint: this many times its concurrency
HOOK_CACHE = 5.0  # seconds an endpoint's settings are reused before they are read again


@dataclass(frozen=True, slots=True)
class SenderSettings:
    timeout: float = 5.0
    concurrency: int = 4
    retry_initial: float = 10.0
    retry_max: float = 3600.0
    disable_after: float = 86400.0
    poll: float = 1.0
    allow_private: bool = False  # [webhooks] allow_private_addresses: else only public destinations


def backoff(attempts: int, initial: float, maximum: float, rnd: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after the ``attempts``-th failed one: doubling from ``initial``
    up to ``maximum``, with jitter in [50 %, 100 %] so endpoints recovering together are not
    hit by every node at the same instant."""
    base = min(maximum, initial * 2.0 ** min(max(attempts - 1, 0), 40))
    return base * (0.5 + 0.5 * rnd())


class WebhookSender:
    def __init__(self, storage: Storage, node: str, settings: SenderSettings,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.node = node
        self.settings = settings
        self.clock = clock
        self._hooks: dict[int, tuple[float, Webhook | None]] = {}
        self._slots: dict[int, asyncio.Semaphore] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._queued: dict[int, int] = {}  # POSTs started or waiting for a slot, per endpoint
        self._backoff_until: dict[int, float] = {}  # monotonic: this node's view of each endpoint's back-off
        self._acks: list[Delivered] = []
        self._flushing: asyncio.Task[None] | None = None
        self.posts = 0  # counters (tests, bench)
        self.failures = 0

    async def run(self) -> None:
        with contextlib.suppress(StorageError):
            await self.storage.webhooks.release_node(self.node)
        # the connection pool is shared by every endpoint; limits are ours (semaphores), not the pool's
        resolver = None if self.settings.allow_private else PublicOnlyResolver()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, resolver=resolver)
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                while True:
                    if not await self._round(session):
                        await self._idle()
            finally:
                for t in self._in_flight:
                    t.cancel()
                await asyncio.gather(*self._in_flight, return_exceptions=True)
                if self._flushing is not None:  # acknowledgements not yet written: their events go again
                    self._flushing.cancel()
                    await asyncio.gather(self._flushing, return_exceptions=True)

    async def _idle(self) -> None:
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self.settings.poll, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(self.settings.poll)

    async def _round(self, session: aiohttp.ClientSession) -> bool:
        """Claim what is due and start its POSTs; False when there was nothing to start."""
        free = MAX_IN_FLIGHT - len(self._in_flight)
        if free <= 0:
            return False
        try:
            events = await self.storage.webhooks.claim(self.node, self.clock(), LEASE, min(CLAIM_LIMIT, free * 10))
        except StorageError as exc:  # the database went away for a moment: the next round retries
            log.warning(f"webhook outbox claim failed: {exc}", extra={"event": "webhook_claim_error"})
            return False
        if not events:
            return False
        by_hook: dict[int, list[OutboxEvent]] = {}
        for ev in events:
            by_hook.setdefault(ev.webhook_id, []).append(ev)
        surplus: list[int] = []
        for hook_id, evs in by_hook.items():
            hook = await self._hook(hook_id)
            if hook is None or hook.disabled_at is not None:
                # removed or disabled since the claim: the lease lapses and nothing is lost
                continue
            # at most a few rounds of POSTs wait for the endpoint's slots: the rest goes back at
            # once, so no claim waits here until its lease runs out (another node would send it too)
            room = max(0, QUEUE_ROUNDS * self.settings.concurrency - self._queued.get(hook_id, 0)) * hook.batch
            surplus += [e.id for e in evs[room:]]
            for i in range(0, min(room, len(evs)), hook.batch):
                self._queued[hook_id] = self._queued.get(hook_id, 0) + 1
                task = asyncio.create_task(self._post(session, hook, evs[i:i + hook.batch]))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
        if surplus:
            await self._release(surplus)
        return len(surplus) < len(events)

    async def _release(self, ids: list[int]) -> None:
        try:
            await self.storage.webhooks.release(ids)
        except StorageError as exc:  # the leases lapse instead
            log.warning(f"webhooks: releasing {len(ids)} events failed: {exc}", extra={"event": "webhook_claim_error"})

    async def _hook(self, hook_id: int) -> Webhook | None:
        now = time.monotonic()
        cached = self._hooks.get(hook_id)
        if cached is not None and now - cached[0] < HOOK_CACHE:
            return cached[1]
        hook = await self.storage.webhooks.get(hook_id)
        self._hooks[hook_id] = (now, hook)
        return hook

    async def _post(self, session: aiohttp.ClientSession, hook: Webhook, events: list[OutboxEvent]) -> None:
        try:
            await self._post_in_slot(session, hook, events)
        finally:
            self._queued[hook.id] -= 1

    async def _post_in_slot(self, session: aiohttp.ClientSession, hook: Webhook, events: list[OutboxEvent]) -> None:
        slots = self._slots.setdefault(hook.id, asyncio.Semaphore(self.settings.concurrency))
        async with slots:
            if self._backoff_until.get(hook.id, 0.0) > time.monotonic():
                # the endpoint failed while this POST waited (or since the claim): it is backing
                # off, so the events go back unsent instead of trying it again at once
                await self._release([e.id for e in events])
                return
            raw = payload.body(events, hook.batch)
            headers = payload.headers(hook.secret, str(int(time.time())), raw, hook.id, hook.signature)
            t0 = time.monotonic()
            status: int | None = None
            error = ""
            try:
                if not self.settings.allow_private:  # names go through the resolver; literals are not resolved
                    check_host(urlsplit(hook.url).hostname or "")
                timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
                async with session.post(hook.url, data=raw, headers=headers, timeout=timeout,
                                        allow_redirects=False) as resp:
                    status = resp.status
                    await resp.read()
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except TimeoutError:
                error = f"no answer within {self.settings.timeout:g} s"
            except (aiohttp.ClientError, OSError, ValueError) as e:
                error = f"{type(e).__name__}: {e}"[:500] or type(e).__name__
            duration_ms = int((time.monotonic() - t0) * 1000)
            self.posts += 1
            await self._settle(hook, events, status, error, duration_ms)

    async def _flush(self) -> None:
        """Write the acknowledged POSTs, all that finished meanwhile in one transaction (a group
        commit: one commit per POST would cap an endpoint at the database's commit rate)."""
        while self._acks:
            posts, self._acks = self._acks, []
            try:
                await self.storage.webhooks.succeeded(posts)
            except StorageError as e:
                # not written: the leases lapse and these events go again (at least once)
                log.warning(f"webhooks: recording {len(posts)} acknowledged POSTs failed: {e}",
                            extra={"event": "webhook_settle_error"})

    async def _settle(self, hook: Webhook, events: list[OutboxEvent], status: int | None, error: str,
                      duration_ms: int) -> None:
        ids = [e.id for e in events]
        now = self.clock()
        s = self.settings
        if not error:
            assert status is not None
            self._acks.append(Delivered(hook.id, tuple(ids), now, status, duration_ms))
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.create_task(self._flush())
            return
        self.failures += 1
        delay = backoff(max(e.attempts for e in events), s.retry_initial, s.retry_max)
        self._backoff_until[hook.id] = time.monotonic() + delay  # before any await: queued POSTs see it
        try:
            await self.storage.webhooks.failed(hook.id, ids, now, status, error, duration_ms,
                                               now + timedelta(seconds=delay), timedelta(seconds=s.disable_after))
            self._hooks.pop(hook.id, None)  # read its state (back-off, disabled) again
            log.info(f"webhook {hook.id} POST failed: {error}; next try in {delay:.1f} s",
                     extra={"event": "webhook_failed", "webhook_id": hook.id, "error": error})
        except StorageError as e:
            # not settled: the lease lapses and the events go again (at least once)
            log.warning(f"webhook {hook.id}: recording the outcome failed: {e}",
                        extra={"event": "webhook_settle_error", "webhook_id": hook.id})


def settings_from(cfg: WebhooksConfig) -> SenderSettings:
    return SenderSettings(timeout=parse_duration(cfg.timeout), concurrency=cfg.concurrency,
                          retry_initial=parse_duration(cfg.retry_initial), retry_max=parse_duration(cfg.retry_max),
                          disable_after=parse_duration(cfg.disable_after), poll=parse_duration(cfg.poll),
                          allow_private=cfg.allow_private_addresses)
