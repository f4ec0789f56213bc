"""Composition root: builds every service from the Config, starts and stops them in order.

Start: storage (refuse a schema that is behind) → spool (purge unfinished receptions) →
reconcile spool and status rows → listeners (SMTP — in this process, or in the intake worker
processes of ``relay/workers`` on sockets bound here —, feedback, HTTP) → READY=1.
Stop (SIGTERM/SIGINT): STOPPING=1 → listeners stop accepting; sessions in DATA finish within the
grace period (intake workers: they stop the same way and hand over what they received, then exit)
→ spool worker drains → storage closes.
Reload (SIGHUP): RELOADING=1 → re-read mailrelay.toml → apply what ``relay/reload.py`` allows, name
what needs a restart; re-read the site rules (``site_rules.toml``) → READY=1. A file that does not
load changes nothing.
Nothing else in the program wires objects together, and there is no module-level mutable state.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from dataclasses import dataclass, field
from functools import partial

from aiohttp import web

from policies import default_chain
from relay.config import (
    CONFIG_NAME,
    Config,
    HttpConfig,
    is_loopback,
    load_config,
    parse_duration,
    parse_hostport,
)
from relay.console.app import attach as attach_console
from relay.console.session import CONSOLE_KEY_FILE, load_key
from relay.control import ControlServer
from relay.database import open_checked_storage, storage_url
from relay.delivery.admin import QueueAdmin
from relay.delivery.scheduler import Scheduler
from relay.delivery.setup import build_scheduler
from relay.diskspace import DiskGuard
from relay.engagement import Engagement
from relay.exports import ExportWorker
from relay.feedback.ingest import FeedbackIngestor
from relay.health import Readiness
from relay.http.app import start_http
from relay.http.auth import EXPORT_LIMITER_KEY, SEARCH_LIMITER_KEY, SERVICES_KEY
from relay.http.services import HttpServices
from relay.intake import Intake
from relay.metrics import Metrics
from relay.rates import MessageRateLimiter
from relay.reload import split_changes
from relay.rules import RulesError
from relay.rules.review import ReviewRecorder
from relay.rules.site import load_reply_rules
from relay.smtp.auth import ApiUserAuthenticator, FailureThrottle
from relay.smtp.conngate import ConnectionGate
from relay.smtp.engine import ListenerOptions
from relay.smtp.feedback import FeedbackHandler, FeedbackMailboxes, FeedbackServices
from relay.smtp.listener import Listener, start_listener
from relay.smtp.submission import SubmissionHandler, SubmissionServices
from relay.spool import Spool
from relay.stats_upkeep import compact_stats
from relay.submission_setup import (
    authenticator,
    disk_guard,
    listener_options,
    reload_tls,
    smtp_listeners,
    submission_services,
    tls_context,
)
from relay.systemd import notify, watchdog, watchdog_interval
from relay.tokens import decode_mailto, read_secrets
from relay.web.app import services_from, start_web
from relay.webhooks.sender import WebhookSender, settings_from
from relay.workers.owner import SHUTDOWN_GRACE, IntakeWorkers, ListeningSocket, OwnerServices, bind_listening
from storage.protocols import Storage

log = logging.getLogger("mailrelay.app")

__all__ = ["SHUTDOWN_GRACE", "App", "metrics_public", "open_checked_storage", "storage_url"]


def metrics_public(http: HttpConfig) -> bool:
    """``[http] metrics_auth``: ``auto`` serves /metrics without credentials only on loopback."""
    if http.metrics_auth == "auto":
        return is_loopback(parse_hostport(http.listen, "http.listen")[0])
    return http.metrics_auth == "none"


@dataclass
class App:
    cfg: Config
    storage: Storage | None = None
    spool: Spool | None = None
    listeners: list[Listener] = field(default_factory=list)
    scheduler: Scheduler | None = None
    control: ControlServer | None = None
    feedback: FeedbackServices | None = None
    intake: Intake | None = None
    http: web.AppRunner | None = None
    web: web.AppRunner | None = None  # the recipient-facing listener ([web])
    engagement: Engagement | None = None  # unsubscribes, opens, clicks (with [web] public_url)
    exports: ExportWorker | None = None
    webhooks: WebhookSender | None = None
    tls: ssl.SSLContext | None = None  # shared by every listener: a reload re-reads its certificate
    metrics: Metrics = field(default_factory=Metrics)  # this App's own registry (GET /metrics)
    review: ReviewRecorder | None = None  # replies no phrase rule recognised (rules unclassified)
    ingestor: FeedbackIngestor | None = None
    intake_workers: IntakeWorkers | None = None  # SMTP sessions in worker processes ([intake] workers)
    bound: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # SMTP listener -> (host, port)s
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _reloads: set[asyncio.Task[tuple[list[str], list[str]]]] = field(default_factory=set)
    _stopped: bool = False
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        cfg = self.cfg
        self.storage = await open_checked_storage(cfg, self.metrics.storage_call)
        spool = self.spool = Spool(cfg.path(cfg.node.spool_dir), fsync=cfg.spool.fsync,
                                   batch_max=cfg.spool.group_commit_max)
        self.metrics.watch(spool=lambda: sum(1 for _ in spool.enumerate()))
        await self.spool.start()
        intake = self.intake = Intake(self.spool, self.storage.statuses)
        await intake.reconcile()
        chain = default_chain(self.storage.suppressions)
        self.review = ReviewRecorder(self.storage.unclassified)
        if cfg.delivery.enabled:
            self.scheduler = build_scheduler(cfg, self.storage, self.spool, chain, metrics=self.metrics,
                                             review=self.review)
            self.metrics.watch(pending=QueueAdmin(self.scheduler).pending_by_site)
            await self.scheduler.restore()
            intake.on_accepted(self.scheduler.enqueue)
            self._tasks.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))
        self.exports = ExportWorker(self.storage, cfg.path("exports"), cfg.node_name)
        await self.exports.recover()
        self._tasks.append(asyncio.create_task(self.exports.run(), name="exports"))
        self._tasks.append(asyncio.create_task(compact_stats(self.storage), name="stats-compact"))
        if cfg.webhooks.enabled:
            self.webhooks = WebhookSender(self.storage, cfg.node_name, settings_from(cfg.webhooks))
            self._tasks.append(asyncio.create_task(self.webhooks.run(), name="webhooks"))
        self.control = ControlServer(cfg.path(cfg.node.control_socket),
                                     QueueAdmin(self.scheduler) if self.scheduler else None,
                                     exports_wake=self.exports.wake)
        await self.control.start()
        # One authenticator for SMTP AUTH and the HTTP API: same keys, one failure throttle.
        auth = authenticator(cfg, self.storage)
        lim = cfg.limits
        rates = MessageRateLimiter(lim.messages_per_second, lim.messages_burst)
        services = submission_services(cfg, self.storage, intake=intake, spool=spool, rate_limiter=rates,
                                       authenticator=auth, metrics=self.metrics, disk=self._disk_guard(), chain=chain)
        tls = self.tls = tls_context(cfg)
        await self._start_submission(services, auth, rates, tls)
        if cfg.web.public_url:
            engagement = self.engagement = Engagement(self.storage)
            self._tasks.append(asyncio.create_task(engagement.run(), name="engagement"))
            if cfg.web.listen:
                self.web = await start_web(cfg.web, services_from(
                    cfg.web, read_secrets(cfg.path(cfg.web.token_secret_file)), engagement))
        if cfg.feedback.listen:
            await self._start_feedback(tls)
        if cfg.http.listen:
            self.http = await start_http(cfg.http, HttpServices(
                storage=self.storage, authenticator=auth,
                queues=QueueAdmin(self.scheduler) if self.scheduler else None,
                exports=self.exports, admin_token=cfg.http.admin_token,
                search_per_minute=cfg.http.search_per_minute, exports_per_minute=cfg.http.exports_per_minute,
                handler_timeout=parse_duration(cfg.http.request_timeout, "http.request_timeout"),
                metrics=self.metrics, metrics_public=metrics_public(cfg.http),
                readiness=Readiness(self.storage, self.spool.tmp_dir, workers=self._workers_running).problems,
                acceptor=services,
                webhook_allow_private=cfg.webhooks.allow_private_addresses),
                extend=partial(attach_console, key=await asyncio.to_thread(load_key, cfg.path(CONSOLE_KEY_FILE))))
        notify("READY=1\nSTATUS=accepting mail")
        interval = watchdog_interval()
        if interval is not None:  # WatchdogSec= in the unit: a stuck loop stops the pings, systemd restarts us
            self._tasks.append(asyncio.create_task(watchdog(interval), name="watchdog"))

    def _disk_guard(self) -> DiskGuard:
        """The free-space reserve over the spool's file system and the SQLite database's (if any)."""
        assert self.spool is not None
        scheduler = self.scheduler
        return disk_guard(self.cfg, self.spool, (lambda: (len(scheduler.messages), scheduler.pending_recipients))
                          if scheduler is not None else (lambda: (0, 0)))

    async def _start_submission(self, services: SubmissionServices, auth: ApiUserAuthenticator,
                                rates: MessageRateLimiter, tls: ssl.SSLContext | None) -> None:
        """The SMTP listeners: sessions in this process, or in intake worker processes on sockets
        bound here (``relay/workers``; ``[intake] workers``)."""
        cfg = self.cfg
        configured = smtp_listeners(cfg)
        for name, _, implicit in configured:
            if implicit and tls is None:
                raise RuntimeError(f"{name}.listen is set but there is no TLS certificate")
        count = cfg.intake_workers
        if count <= 0 or not configured:
            def factory() -> SubmissionHandler:
                return SubmissionHandler(services)

            for name, lc, implicit in configured:
                host, port = parse_hostport(lc.listen, f"{name}.listen")
                listener = await start_listener(listener_options(cfg, name, lc, tls, implicit), factory, host, port)
                self.listeners.append(listener)
                self._listening(name, listener.addresses)
            return
        sockets: list[ListeningSocket] = []
        for name, lc, implicit in configured:
            listener_options(cfg, name, lc, tls, implicit)  # the same checks and warnings as in-process
            host, port = parse_hostport(lc.listen, f"{name}.listen")
            for sock in bind_listening(host, port):
                sockets.append(ListeningSocket(name, sock))
                self._listening(name, [sock.getsockname()[:2]])
        assert self.intake is not None and self.spool is not None and services.disk is not None
        throttle = auth.throttle
        assert isinstance(throttle, FailureThrottle)
        gates = {name: ConnectionGate(lc.max_connections_per_ip) for name, lc, _ in configured}
        self.intake_workers = IntakeWorkers(cfg.home, sockets, OwnerServices(
            intake=self.intake, spool=self.spool, rate_limiter=rates, throttle=throttle, disk=services.disk,
            metrics=self.metrics, gates=gates if count > 1 else {}), count, shared_gate=count > 1)
        await self.intake_workers.start()

    def _workers_running(self) -> tuple[int, int]:
        w = self.intake_workers
        return (w.alive, w.count) if w is not None else (0, 0)

    def _listening(self, name: str, addresses: list[tuple[str, int]]) -> None:
        for host, port in addresses:
            self.bound.setdefault(name, []).append((str(host), int(port)))
            addr = f"{host}:{port}"
            log.info(f"listening ({name}) on {addr}", extra={"event": "listening", "listener": name, "address": addr})

    async def _start_feedback(self, tls: ssl.SSLContext | None) -> None:
        from relay.feedback.setup import build_ingestor  # the parser loads its rules at import

        cfg = self.cfg
        assert self.storage is not None
        ingestor = self.ingestor = build_ingestor(cfg, self.storage, self.metrics, self.review)

        engagement = self.engagement
        link_keys = read_secrets(cfg.path(cfg.web.token_secret_file)) if engagement is not None else []

        async def process(mid: str, raw: bytes, rcpts: tuple[str, ...]) -> None:
            handled = 0
            if engagement is not None:  # mail to a List-Unsubscribe mailto: address
                for rcpt in rcpts:
                    try:
                        handled += await engagement.unsubscribe_mailto(rcpt, link_keys)
                    except Exception:
                        log.exception("unsubscribe by mail failed", extra={"event": "unsubscribe_mailto_failed",
                                                                          "inbox_id": mid})
            if rcpts and handled == len(rcpts):  # only unsubscribe mailboxes: no bounce or complaint in it
                await asyncio.to_thread(ingestor.inbox.done_sync, mid)
                return
            await ingestor.ingest(raw, f"smtp:{mid}", envelope_rcpts=rcpts, inbox_id=mid)

        async def backlog() -> None:  # received before a crash or restart, not yet processed
            for mid in list(ingestor.inbox.pending()):
                raw = await asyncio.to_thread(ingestor.inbox.read_sync, mid)
                await ingestor.ingest(raw, f"inbox:{mid}", inbox_id=mid)

        accept = FeedbackMailboxes.build(cfg.feedback.domains, cfg.feedback.mailboxes, ingestor.secrets)
        self.feedback = FeedbackServices(
            accept, ingestor.inbox, process,
            unsubscribe_mailbox=lambda a: decode_mailto(a.rpartition("@")[0], link_keys) is not None)
        self._tasks.append(asyncio.create_task(backlog(), name="feedback-backlog"))
        lim = cfg.limits
        host, port = parse_hostport(cfg.feedback.listen, "feedback.listen")
        options = ListenerOptions(
            name="feedback", hostname=cfg.feedback.hostname or socket.getfqdn(), tls_context=tls,
            auth_enabled=False, require_auth=False, max_message_size=lim.max_message_size,
            max_recipients=100, max_protocol_errors=lim.max_protocol_errors,
            command_timeout=parse_duration(lim.command_timeout), data_timeout=parse_duration(lim.data_timeout),
            data_idle_timeout=parse_duration(lim.data_idle_timeout),
        )
        services = self.feedback

        def factory() -> FeedbackHandler:
            return FeedbackHandler(services)

        listener = await start_listener(options, factory, host, port)
        self.listeners.append(listener)
        for bound_host, bound_port in listener.addresses:
            addr = f"{bound_host}:{bound_port}"
            log.info(f"listening (feedback) on {addr}", extra={"event": "listening", "listener": "feedback",
                                                                 "address": addr})

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        if self._stopped:
            return
        self._stopped = True
        notify("STOPPING=1")
        log.info("stopping", extra={"event": "stopping"})
        if self.http is not None:
            await self.http.cleanup()
            self.http = None
        if self.web is not None:
            await self.web.cleanup()
            self.web = None
        await asyncio.gather(*(lst.stop(grace) for lst in self.listeners))
        self.listeners.clear()
        if self.intake_workers is not None:  # they hand over what they received, while our queue runs
            await self.intake_workers.stop(grace)
            self.intake_workers = None
        if self.intake is not None:
            await self.intake.flush(grace)
        if self.feedback is not None and self.feedback.tasks:
            await asyncio.wait(list(self.feedback.tasks), timeout=grace)
        if self.scheduler is not None:
            await self.scheduler.stop(parse_duration(self.cfg.delivery.shutdown_grace))
        if self.engagement is not None:
            await self.engagement.close()  # what the web listener recorded last
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a task that ignores its cancellation must not hang the shutdown
            _, stuck = await asyncio.wait(self._tasks, timeout=grace)
            for task in stuck:
                log.error("background task did not stop", extra={"event": "stop_stuck", "task": task.get_name()})
        self._tasks.clear()
        if self.control is not None:
            await self.control.stop()
        if self.review is not None:
            await self.review.close()  # the last sightings, before the storage closes
        if self.spool is not None:
            await self.spool.stop()
        if self.storage is not None:
            await self.storage.close()
        log.info("stopped", extra={"event": "stopped"})

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> tuple[list[str], list[str]]:
        """Re-read the configuration; returns (keys applied, keys that need a restart)."""
        notify("RELOADING=1")
        try:
            try:
                new = await asyncio.to_thread(load_config, self.cfg.home / CONFIG_NAME)
            except (ValueError, OSError) as e:  # ConfigError, TOML syntax, unreadable file
                log.error(f"reload refused, the running configuration stays: {e}", extra={"event": "reload_refused"})
                return [], []
            applied, restart = split_changes(self.cfg, new)
            self._apply(new)
            if self.intake_workers is not None:
                self.intake_workers.reload()
            await self._reload_rules()
            log.info("configuration reloaded", extra={"event": "reloaded", "applied": applied,
                                                      "needs_restart": restart})
            if restart:
                log.warning(f"changed keys that apply only after a restart: {', '.join(restart)}",
                            extra={"event": "reload_needs_restart", "keys": restart})
            return applied, restart
        finally:
            notify("READY=1")

    async def _reload_rules(self) -> None:
        """Site rules (``mailrelay rules add``) for delivery and feedback; a bad file keeps the old ones."""
        from relay.feedback.setup import bounce_parser

        home = self.cfg.home
        try:
            rules = await asyncio.to_thread(load_reply_rules, home)
            parser = await asyncio.to_thread(bounce_parser, home)
        except (RulesError, OSError) as e:
            log.error(f"site rules not reloaded, the previous ones stay: {e}", extra={"event": "rules_reload_failed"})
            return
        if self.scheduler is not None:
            self.scheduler.ctx.rules = rules
        if self.ingestor is not None:
            self.ingestor.parse = parser
        log.info("site rules reloaded", extra={"event": "rules_reloaded"})

    def _apply(self, new: Config) -> None:
        logging.getLogger().setLevel(new.log.level.upper())
        if self.http is not None:
            services = self.http.app[SERVICES_KEY]
            services.search_per_minute = new.http.search_per_minute
            services.exports_per_minute = new.http.exports_per_minute
            services.handler_timeout = parse_duration(new.http.request_timeout, "http.request_timeout")
            self.http.app[SEARCH_LIMITER_KEY].limit = new.http.search_per_minute
            self.http.app[EXPORT_LIMITER_KEY].limit = new.http.exports_per_minute
        if self.tls is not None:  # in place: the listeners' context serves new handshakes with it
            reload_tls(self.tls, new)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.stop()
