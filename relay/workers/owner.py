"""The owner's side of the intake workers: start them on the listening sockets, answer their
requests, restart one that dies, stop them first at shutdown.

``mailrelay serve`` binds the SMTP listeners itself and passes the listening sockets to N worker
processes (one shared accept queue: a worker that dies loses no queued connection). A worker runs
the sessions (AUTH, suppression reads, header scan) and stages each message (written and fsync'd
in ``spool/tmp``, hard-linked into ``spool/queue``, directory fsync'd); the owner adopts it, records
it and hands it to delivery, then answers; the worker sends the 250 after that answer. So the owner
knows every message answered 250; a file in ``queue/`` it was never told about is one its worker
died before handing over (never answered 250), which the ``tmp/`` link still names: it is removed
(``Spool.purge_staged``).

What stays in the owner, one per node as before: the home lock, the control socket, SIGHUP,
systemd notify and the watchdog, the only SQLite writer, the queue and delivery, the HTTP API, the
per-API_USER rate budget, the AUTH failure windows, the per-IP connection counts (with more than
one worker) and the free-space reserve's view of the queue.

Failures: a worker that exits is logged, its staged messages not handed over and its connection
counts are dropped and it is started again (after 1 s, doubling to 30 s while it keeps failing).
A worker that does not answer a ping within ``PING_TIMEOUT`` is killed (and so restarted). Workers die with the owner
(PR_SET_PDEATHSIG, and EOF on the channel): a listening socket never outlives the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from relay.diskspace import DiskGuard
from relay.intake import Intake, IntakeError, IntakeFull
from relay.metrics import Metrics
from relay.rates import MessageRateLimiter
from relay.smtp.auth import FailureThrottle
from relay.smtp.conngate import ConnectionGate
from relay.spool import Spool
from relay.spool_envelope import record_from_doc
from relay.workers.channel import Channel, open_channel
from storage.records import Status, SubmissionRecord

log = logging.getLogger("mailrelay.workers")

SHUTDOWN_GRACE = 30.0  # SIGTERM: sessions inside DATA may finish within this (the owner's too)
READY_TIMEOUT = 60.0
PING_EVERY = 5.0
PING_TIMEOUT = 20.0
RESTART_MIN, RESTART_MAX = 1.0, 30.0
# systemd's variables are the owner's: a worker must not notify or be taken for the main process.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass
class OwnerServices:
    """The owner's objects the workers' requests are answered from (shared with its HTTP API)."""

    intake: Intake
    spool: Spool
    rate_limiter: MessageRateLimiter
    throttle: FailureThrottle
    disk: DiskGuard
    metrics: Metrics
    gates: dict[str, ConnectionGate] = field(default_factory=dict)  # per listener; empty: workers count


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    channel: Channel = field(init=False)  # set once open: frames may arrive at once
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    counted: Counter[tuple[str, str]] = field(default_factory=Counter)  # (listener, ip) connections open
    serving: asyncio.Task[None] | None = None


def bind_listening(host: str, port: int, backlog: int = 1024) -> list[socket.socket]:
    """Listening sockets for HOST:PORT (one per address the name has), inheritable by workers."""
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _, addr in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE):
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


@dataclass
class ListeningSocket:
    listener: str  # "smtp" | "submission_tls"
    sock: socket.socket


class IntakeWorkers:
    def __init__(self, home: Path, sockets: list[ListeningSocket], services: OwnerServices, count: int,
                 *, shared_gate: bool) -> None:
        self.home = home
        self.sockets = sockets
        self.s = services
        self.count = count
        self.shared_gate = shared_gate  # several workers: the owner counts connections per IP
        self.workers: dict[int, _Worker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.restarts = 0
        self.ping_every = PING_EVERY
        self.ping_timeout = PING_TIMEOUT
        services.throttle.on_block = self._tell_blocked

    # region lifecycle
    async def start(self) -> None:
        for index in range(self.count):
            worker = await self._started(index)
            self._tasks.append(asyncio.create_task(self._watch(worker), name=f"intake-worker-{index}"))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="intake-heartbeat"))

    async def _started(self, index: int) -> _Worker:
        """A new worker for slot ``index``, once it said it is listening; raises if it did not."""
        worker = await self._spawn(index)
        try:
            await self._wait_ready(worker)
        except BaseException:  # it did not start, or we are stopping meanwhile
            if worker.proc.returncode is None:
                worker.proc.kill()
            await self._forget(worker)
            raise
        return worker

    async def _spawn(self, index: int) -> _Worker:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [theirs.fileno()] + [ls.sock.fileno() for ls in self.sockets]
        args = [sys.executable, "-m", "relay.workers.worker", "--home", str(self.home),
                "--owner-pid", str(os.getpid()), "--channel-fd", str(theirs.fileno())]
        for ls in self.sockets:
            args += ["--listener", f"{ls.listener}:{ls.sock.fileno()}"]
        if self.shared_gate:
            args.append("--shared-gate")
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        try:
            proc = await asyncio.create_subprocess_exec(*args, pass_fds=fds, env=env, stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        worker = _Worker(index, proc)
        worker.channel = await open_channel(mine, partial(self._handle, worker))
        worker.serving = asyncio.create_task(worker.channel.serve(), name=f"intake-channel-{index}")
        self.workers[index] = worker
        log.info("intake worker started", extra={"event": "worker_started", "worker": index, "pid": proc.pid})
        return worker

    async def _wait_ready(self, worker: _Worker) -> None:
        ready = asyncio.create_task(worker.ready.wait())
        exited = asyncio.create_task(worker.proc.wait())
        try:
            await asyncio.wait({ready, exited}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        if not worker.ready.is_set():
            if worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()
            raise RuntimeError(f"intake worker {worker.index} did not start (exit code {worker.proc.returncode}); "
                               "its error is in the log above")

    async def _watch(self, worker: _Worker) -> None:
        """Wait for the worker's end; unless we are stopping, start it again (backing off while it
        keeps failing)."""
        loop = asyncio.get_running_loop()
        delay = RESTART_MIN
        while True:
            started = loop.time()
            code = await worker.proc.wait()
            await self._forget(worker)
            if self._stopping:
                return
            if loop.time() - started > 60:
                delay = RESTART_MIN  # it ran a while: this is not a crash loop
            log.error("intake worker exited; starting it again", extra={
                "event": "worker_exited", "worker": worker.index, "pid": worker.proc.pid, "code": code})
            self.restarts += 1
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX)
                if self._stopping:
                    return
                try:
                    worker = await self._started(worker.index)
                    break
                except Exception:
                    log.exception("intake worker did not start", extra={"event": "worker_start_failed"})

    async def _forget(self, worker: _Worker) -> None:
        """A worker ended: what it had open here is released, what it staged but did not hand
        over (never answered 250) is removed."""
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        await worker.channel.close()  # waits for requests of its still being answered (a publish)
        if worker.serving is not None:
            await asyncio.wait([worker.serving], timeout=5.0)
        for (listener, ip), n in worker.counted.items():
            gate = self.s.gates.get(listener)
            if gate is not None:
                for _ in range(n):
                    gate.release(ip)
        worker.counted.clear()
        purged = await self.s.spool.purge_worker(f"w{worker.proc.pid}")
        if purged:
            log.warning("removed messages a stopped intake worker had not handed over", extra={
                "event": "worker_staged_purged", "worker": worker.index, "count": purged})

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ping_every)
            for worker in list(self.workers.values()):
                if not worker.ready.is_set() or worker.proc.returncode is not None:
                    continue
                try:
                    await asyncio.wait_for(worker.channel.call("ping"), self.ping_timeout)
                except (TimeoutError, ConnectionError):
                    if worker.proc.returncode is None and not self._stopping:
                        log.error("intake worker does not answer; killing it", extra={
                            "event": "worker_unresponsive", "worker": worker.index, "pid": worker.proc.pid})
                        worker.proc.kill()

    def reload(self) -> None:
        """SIGHUP: each worker re-reads the configuration (log level, TLS certificate)."""
        for worker in self.workers.values():
            # Only once it handles SIGHUP: before that the signal would end the process.
            if worker.ready.is_set() and worker.proc.returncode is None:
                worker.proc.send_signal(signal.SIGHUP)

    async def stop(self, grace: float) -> None:
        """Workers stop accepting, finish the sessions in DATA (within ``grace``), hand over what
        they received and exit; then the owner may stop the queue."""
        self._stopping = True
        procs = [w.proc for w in self.workers.values() if w.proc.returncode is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        if procs:
            _, stuck = await asyncio.wait([asyncio.create_task(p.wait()) for p in procs], timeout=grace + 5.0)
            if stuck:
                log.error("intake workers did not stop in time; killing them", extra={"event": "worker_stop_stuck"})
                for proc in procs:
                    if proc.returncode is None:
                        proc.kill()
                await asyncio.wait(stuck, timeout=5.0)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10.0)
        for worker in list(self.workers.values()):  # one started while we were stopping
            if worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()
            await self._forget(worker)
        for ls in self.sockets:
            ls.sock.close()

    @property
    def alive(self) -> int:
        return sum(1 for w in self.workers.values() if w.ready.is_set() and w.proc.returncode is None)

    # endregion

    # region requests
    def _handle(self, worker: _Worker, op: str, doc: dict[str, Any]) -> Any:
        """A budget is answered at once; a hand-off returns an awaitable (``channel.py``)."""
        handler = self._ops.get(op)
        if handler is None:
            raise ValueError(f"unknown request {op!r}")
        return handler(self, worker, doc)

    def _ready(self, worker: _Worker, doc: dict[str, Any]) -> None:
        for kind, key, left in self.s.throttle.blocked_list():  # its starting copy
            worker.channel.send("auth_block", kind=kind, key=key, **{"for": left})
        worker.ready.set()

    def _tell_blocked(self, kind: str, key: str, left: float) -> None:
        """An IP or API_USER became blocked (here or in a worker): every worker checks its copy."""
        for worker in self.workers.values():
            if worker.proc.returncode is None:
                worker.channel.send("auth_block", kind=kind, key=key, **{"for": left})

    def _rate(self, worker: _Worker, doc: dict[str, Any]) -> bool:
        return self.s.rate_limiter.allow(str(doc["u"]), int(doc.get("n", 1)))

    def _rate_refund(self, worker: _Worker, doc: dict[str, Any]) -> None:
        self.s.rate_limiter.refund(str(doc["u"]), int(doc.get("n", 1)))

    def _auth_failed(self, worker: _Worker, doc: dict[str, Any]) -> None:
        self.s.throttle.failed_now(str(doc["ip"]), str(doc["u"]))

    def _conn_open(self, worker: _Worker, doc: dict[str, Any]) -> bool:
        listener, ip = str(doc["l"]), str(doc["ip"])
        gate = self.s.gates.get(listener)
        if gate is None:
            return True
        if not gate.try_acquire(ip):
            return False
        worker.counted[(listener, ip)] += 1
        return True

    def _conn_close(self, worker: _Worker, doc: dict[str, Any]) -> None:
        key = (str(doc["l"]), str(doc["ip"]))
        gate = self.s.gates.get(key[0])
        if gate is not None and worker.counted[key] > 0:
            worker.counted[key] -= 1
            if not worker.counted[key]:
                del worker.counted[key]
            gate.release(key[1])

    def _count_refused(self, record: SubmissionRecord) -> None:
        for r in record.recipients:
            if r.status is Status.INVALID:
                self.s.metrics.rcpt_refused(r.rule or "")

    async def _publish(self, worker: _Worker, doc: dict[str, Any]) -> dict[str, Any]:
        record = record_from_doc(doc["env"])
        try:
            content = doc.get("blob", b"") if doc.get("content") else None
            await self.s.intake.publish(str(doc["tmp"]), record, content)
        except IntakeFull:
            return {"result": "full", "waiting": list(self.s.disk.waiting())}
        except IntakeError as e:
            return {"result": "failed", "error": str(e)[:200]}
        msg = record.message
        self.s.disk.debit(msg.size)
        self.s.metrics.message_accepted(msg.api_user)
        self._count_refused(record)
        self.s.metrics.smtp_transaction.observe(max(0.0, (datetime.now(UTC) - msg.request_time).total_seconds()))
        return {"result": "ok", "waiting": list(self.s.disk.waiting())}

    async def _intercepted(self, worker: _Worker, doc: dict[str, Any]) -> bool:
        record = record_from_doc(doc["env"])
        self._count_refused(record)
        await self.s.intake.record_intercepted(record)
        return True

    _ops: dict[str, Callable[[IntakeWorkers, _Worker, dict[str, Any]], Any]] = {
        "ready": _ready, "rate": _rate, "rate_refund": _rate_refund, "auth_failed": _auth_failed,
        "conn_open": _conn_open, "conn_close": _conn_close, "publish": _publish, "intercepted": _intercepted,
    }

    # endregion
