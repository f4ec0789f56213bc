"""An intake worker process: SMTP sessions on listening sockets inherited from ``mailrelay serve``.

Started only by the owner (``owner.py``), never by hand::

    python -m relay.workers.worker --home DIR --owner-pid PID --channel-fd FD --listener smtp:FD ...

It reads the same ``mailrelay.toml``, opens the database for reading (AUTH, suppression lookups),
stages each message in the spool and asks the owner for everything that is one per node. It exits
when the owner asks (SIGTERM: sessions in DATA finish first), when the owner goes away (EOF on the
channel; the kernel's PR_SET_PDEATHSIG kills it if the owner is killed), and never writes to the
database or to ``spool/queue`` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay.config import CONFIG_NAME, Config, load_config
from relay.database import open_checked_storage
from relay.logging_setup import setup_logging
from relay.metrics import Metrics
from relay.smtp.listener import Listener, start_listener
from relay.smtp.submission import SubmissionHandler
from relay.spool import Spool
from relay.submission_setup import (
    authenticator,
    disk_guard,
    listener_options,
    reload_tls,
    smtp_listeners,
    submission_services,
    tls_context,
)
from relay.workers.channel import open_channel
from relay.workers.owner import SHUTDOWN_GRACE
from relay.workers.remote import OwnerLink, RemoteConnections, RemoteIntake, RemoteRateBudget, RemoteThrottle

log = logging.getLogger("mailrelay.workers")

PR_SET_PDEATHSIG = 1


WORKER_SQLITE_READERS = 1


def die_with_owner(owner_pid: int) -> None:
    """SIGKILL when the owner ends, whatever the way: an orphan would keep the SMTP port bound."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: EOF on the channel still ends us
        pass
    if os.getppid() != owner_pid:  # the owner died before prctl took effect
        os._exit(1)


class Worker:
    def __init__(self, cfg: Config, channel_fd: int, listeners: list[tuple[str, int]], shared_gate: bool) -> None:
        self.cfg = cfg
        self.channel_fd = channel_fd
        self.listener_fds = listeners
        self.shared_gate = shared_gate
        self.listeners: list[Listener] = []
        self.tls: ssl.SSLContext | None = None
        self.throttle: RemoteThrottle | None = None
        self._stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        cfg = self.cfg
        # One SQLite reader: a worker's reads are point lookups (API user, suppression) that queue
        # behind each other for microseconds, while every idle reader thread is woken for a read
        # (a futex wake, a context switch and a GIL hand-off each): four cost more than they gain.
        storage = await open_checked_storage(cfg, sqlite_readers=WORKER_SQLITE_READERS)
        channel = await open_channel(socket.socket(fileno=self.channel_fd), self._answer)
        serving = asyncio.create_task(channel.serve())
        owner = OwnerLink(channel)
        self.throttle = RemoteThrottle(owner)
        spool = Spool(cfg.path(cfg.node.spool_dir), fsync=cfg.spool.fsync, batch_max=cfg.spool.group_commit_max,
                      stage_tag=f"w{os.getpid()}")
        await spool.start()
        try:
            self.tls = tls_context(cfg)
            services = submission_services(
                cfg, storage, intake=RemoteIntake(spool, owner), spool=spool, rate_limiter=RemoteRateBudget(owner),
                authenticator=authenticator(cfg, storage, self.throttle), metrics=Metrics(),
                disk=disk_guard(cfg, spool, owner.waiting_now),
                connections=RemoteConnections(owner) if self.shared_gate else None)

            def factory() -> SubmissionHandler:
                return SubmissionHandler(services)

            settings = {name: (lc, implicit) for name, lc, implicit in smtp_listeners(cfg)}
            for name, fd in self.listener_fds:
                lc, implicit = settings[name]
                options = listener_options(cfg, name, lc, self.tls, implicit, warn=False)
                if self.shared_gate:  # the owner counts connections per IP across the workers
                    options = dataclasses.replace(options, max_connections_per_ip=0)
                sock = socket.socket(fileno=fd)
                self.listeners.append(await start_listener(options, factory, "", 0, sock=sock))
            await channel.call("ready")
            closed = asyncio.create_task(channel.closed.wait())
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            stop.cancel()
            if channel.closed.is_set() and not self._stop.is_set():
                log.error("the owner went away; stopping", extra={"event": "worker_orphaned"})
            await asyncio.gather(*(lst.stop(SHUTDOWN_GRACE) for lst in self.listeners))
        finally:
            await spool.stop()
            await channel.close()
            serving.cancel()
            await storage.close()

    def _answer(self, op: str, doc: dict[str, Any]) -> Any:
        if op == "ping":
            return "pong"
        if op == "auth_block":  # before our throttle exists: the copy sent at "ready" has it
            if self.throttle is not None:
                self.throttle.block(str(doc["kind"]), str(doc["key"]), float(doc["for"]))
            return None
        raise ValueError(f"unknown request {op!r}")

    def _reload(self) -> None:
        try:
            new = load_config(self.cfg.home / CONFIG_NAME)
        except (ValueError, OSError) as e:
            log.error(f"reload refused, the running configuration stays: {e}", extra={"event": "reload_refused"})
            return
        logging.getLogger().setLevel(new.log.level.upper())
        if self.tls is not None:
            reload_tls(self.tls, new)
        log.info("intake worker reloaded its configuration", extra={
            "event": "worker_reloaded", "log_level": new.log.level, "tls": self.tls is not None})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="relay.workers.worker", description="mailrelay intake worker (started by serve)")
    p.add_argument("--home", required=True, type=Path)
    p.add_argument("--owner-pid", required=True, type=int)
    p.add_argument("--channel-fd", required=True, type=int)
    p.add_argument("--listener", action="append", default=[], help="NAME:FD of a listening socket")
    p.add_argument("--shared-gate", action="store_true", help="the owner counts connections per IP")
    args = p.parse_args(argv)
    die_with_owner(args.owner_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the owner stops us
    cfg = load_config(args.home / CONFIG_NAME)
    setup_logging(cfg.log.level, cfg.log.format, fields={"process": "intake-worker", "pid": os.getpid()})
    listeners = [(name, int(fd)) for name, _, fd in (item.partition(":") for item in args.listener)]
    worker = Worker(cfg, args.channel_fd, listeners, args.shared_gate)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(worker.run())
    else:
        uvloop.run(worker.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
