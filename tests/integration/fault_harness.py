"""Fault runs against a real `mailrelay serve` process: the pieces the fault tests and
``bench/soak.py`` share.

- :class:`ServeProcess`: a data directory made with the CLI (`mailrelay init`, `users add`) as an
  operator would, with short retry/pause timings (:data:`FAST_DELIVERY`), delivering to a
  relay host; started, SIGKILLed, restarted and stopped as a subprocess.
- :class:`Load`: concurrent SMTP clients submitting one-recipient messages, each with a unique
  token in its Message-ID (``<TOKEN@faults.test>``), recording every reply: which tokens were
  answered 250 (and their email_id), the 4xx and 5xx replies by stage, the dropped connections.
- :class:`MxFlapper`: stops and starts a :class:`~tests.helpers.mx_sink.ScriptedMx` on a rhythm.
- :func:`tally`: what the MX received against what was answered 250: lost (250 but never
  delivered: must be 0), duplicates (delivered more than once), delivered without a 250 (the
  client lost the reply: allowed).

Everything is bounded in time. A message answered 250 is the relay's promise; a message whose
reply never arrived (connection cut) may or may not be delivered; both are reported.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib

from relay.config_render import render_config
from storage import open_storage
from storage.records import LogKind, Status, StatusFilter
from tests.helpers.mx_sink import ReceivedMessage, ScriptedMx
from tests.integration.delivery_harness import free_port

KEY = "fault-test-key-0123456789"
API_USER = "app1"
SENDER = "app@acme.example"
TOKEN_DOMAIN = "faults.test"
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?= |$)")
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<([A-Za-z0-9.-]{1,64})@faults\.test>", re.IGNORECASE | re.MULTILINE)

# Retries and pauses in seconds instead of minutes, so a fault run drains within its bounds.
FAST_DELIVERY: dict[str, Any] = {
    "delivery.retry_schedule": ["1s"],
    "delivery.retry_then_every": "1s",
    "delivery.connect_timeout": "2s",
    "delivery.command_timeout": "10s",
    "delivery.data_timeout": "10s",
    "delivery.shutdown_grace": "2s",
    "delivery.ehlo_name": "relay.test",
    "sites.pause_initial": "1s",
    "sites.pause_max": "2s",
    "sites.max_connections": 5,
    "smtp.hostname": "relay.test",
    "limits.auth_failure_delay": "0s",
}


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, keys in table.items() for key, value in keys.items()}


class ServeProcess:
    """One data directory and the `mailrelay serve` process running on it (if any)."""

    def __init__(self, home: Path, smtp_port: int) -> None:
        self.home = home
        self.smtp_port = smtp_port
        self.log = home.parent / f"{home.name}-serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @classmethod
    def create(cls, home: Path, *, relayhost: str, storage_url: str | None = None,
               overrides: dict[str, Any] | None = None, add_user: bool = True) -> ServeProcess:
        """`mailrelay init` + :data:`FAST_DELIVERY` and ``overrides`` + `mailrelay users add` (not
        with ``add_user`` False: a second node on a database that has the user already)."""
        port = free_port("127.0.0.1")
        sp = cls(home, port)
        args = ["init", "--smtp", f"127.0.0.1:{port}", "--relayhost", relayhost]
        if storage_url:
            args += ["--storage-url", storage_url]
        sp.cli(*args)
        cfg = home / "mailrelay.toml"
        settings = _flatten(tomllib.loads(cfg.read_text()))
        settings.update(FAST_DELIVERY)
        settings.update(overrides or {})
        cfg.write_text(render_config(settings))
        sp.cli("config", "check")  # the relay accepts what we wrote
        if add_user:
            sp.cli("users", "add", API_USER, "--account", "acme", "--key", KEY)
        return sp

    def cli(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "relay", *args, "--home", str(self.home)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"mailrelay {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}")
        return r.stdout

    @property
    def storage_url(self) -> str:
        url = tomllib.loads((self.home / "mailrelay.toml").read_text()).get("storage", {}).get("url", "")
        return str(url) if url else f"sqlite://{self.home.resolve() / 'mailrelay.sqlite3'}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"---- start {self.starts} ----\n".encode())
            self.proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--home", str(self.home)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "NOTIFY_SOCKET": ""})

    async def wait_ready(self, timeout: float = 30) -> float:
        """Wait for the 220 greeting; returns the seconds it took."""
        t0 = time.monotonic()
        while True:
            assert self.proc is not None and self.proc.poll() is None, f"serve exited: {self.log_tail()}"
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.smtp_port), 2)
                line = await asyncio.wait_for(r.readline(), 5)
                w.close()
                if line.startswith(b"220"):
                    return time.monotonic() - t0
            except (OSError, TimeoutError):
                pass
            assert time.monotonic() - t0 < timeout, f"serve not ready within {timeout} s: {self.log_tail()}"
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"serve did not stop within {timeout} s: {self.log_tail()}") from None

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def spool_count(self) -> int:
        queue = self.home / "spool" / "queue"
        return sum(1 for _ in queue.iterdir()) if queue.exists() else 0

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# ------------------------------------------------------------------------------------------ load


def _reply_code(exc: BaseException) -> int | None:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return exc.recipients[0].code if exc.recipients else None
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and code >= 200 else None


def _enhanced(exc: BaseException) -> str:
    """The reply's enhanced status code (" 4.3.1"), or "" if it has none."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    found = _ENHANCED.match(str(getattr(exc, "message", "")))
    return f" {found.group(0)}" if found else ""


def _stage(exc: BaseException) -> str:
    return {aiosmtplib.SMTPRecipientsRefused: "RCPT", aiosmtplib.SMTPSenderRefused: "MAIL",
            aiosmtplib.SMTPDataError: "DATA", aiosmtplib.SMTPAuthenticationError: "AUTH",
            aiosmtplib.SMTPConnectResponseError: "greeting"}.get(type(exc), type(exc).__name__)


@dataclass
class Load:
    """``clients`` concurrent sessions submitting until :meth:`stop` (or ``limit`` messages sent)."""

    port: int
    clients: int = 6
    limit: int | None = None  # stop once this many messages were answered 250 (soak: N messages)
    body_bytes: int = 600
    pace: float = 0.0  # seconds each client waits between its messages (0: as fast as it can)
    prefix: str = "w"  # of the tokens (w0-1, ...): loads that must not share recipients differ in it
    acked: dict[str, str] = field(default_factory=dict)  # token -> email_id of every 250
    ack_times: list[float] = field(default_factory=list)  # monotonic time of each 250
    temp: Counter[str] = field(default_factory=Counter)  # "RCPT 451 4.3.0", "MAIL 452 4.3.1", "AUTH 454", ...
    permanent: list[str] = field(default_factory=list)  # every 5xx: "RCPT 550 5.x.x ..."
    cut: Counter[str] = field(default_factory=Counter)  # connections lost/refused, by stage
    started: int = 0  # transactions started
    _in_flight: int = 0
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(n)) for n in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def finished(self, timeout: float) -> None:
        """Wait until ``limit`` messages were answered 250 (TimeoutError after ``timeout``)."""
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)

    def temp_total(self) -> int:
        return sum(self.temp.values())

    async def next_ack_after(self, t0: float, timeout: float) -> float:
        """Seconds from ``t0`` to the first 250 after it (recovery time)."""
        deadline = time.monotonic() + timeout
        while not (self.ack_times and self.ack_times[-1] > t0):
            assert time.monotonic() < deadline, f"no 250 within {timeout} s after the fault"
            await asyncio.sleep(0.05)
        return next(t for t in self.ack_times if t > t0) - t0

    def _more(self) -> bool:
        return not self._stop.is_set() and (self.limit is None or len(self.acked) + self._in_flight < self.limit)

    async def _client(self, n: int) -> None:
        while self._more():
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=15, start_tls=False)
            try:
                await c.connect()
                await c.login(API_USER, KEY)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
                self._note(e, connecting=True)
                c.close()
                await asyncio.sleep(0.1)
                continue
            try:
                while self._more():
                    self.started += 1
                    token = f"{self.prefix}{n}-{next(self._seq)}"
                    body = (f"Message-ID: <{token}@{TOKEN_DOMAIN}>\r\nSubject: fault {token}\r\n"
                            f"From: {SENDER}\r\nTo: {token}@example.com\r\n\r\n" + "x" * self.body_bytes + "\r\n")
                    self._in_flight += 1
                    try:
                        _, reply = await c.sendmail(SENDER, [f"{token}@example.com"], body)
                    finally:
                        self._in_flight -= 1
                    self.acked[token] = reply.rsplit(" ", 1)[-1]
                    self.ack_times.append(time.monotonic())
                    if self.pace:
                        await asyncio.sleep(self.pace)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
                self._note(e, connecting=False)
                await asyncio.sleep(0.05)
            finally:
                c.close()

    def _note(self, e: BaseException, *, connecting: bool) -> None:
        code = _reply_code(e)
        if code is None:
            self.cut["connect" if connecting else "session"] += 1
        elif code >= 500:
            self.permanent.append(f"{_stage(e)} {code} {getattr(e, 'message', e)}")
        elif code >= 400:
            self.temp[f"{_stage(e)} {code}{_enhanced(e)}"] += 1


# ------------------------------------------------------------------------------------------- MX


class MxFlapper:
    """Takes ``mx`` down for ``down`` s, then up for ``up`` s, for ``duration`` s; up at the end."""

    def __init__(self, mx: ScriptedMx, *, down: float = 1.0, up: float = 1.5, duration: float = 15.0) -> None:
        self.mx, self.down, self.up, self.duration = mx, down, up, duration
        self.flaps = 0
        self.last_up = 0.0  # monotonic time the MX last came back
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        end = time.monotonic() + self.duration
        try:
            while time.monotonic() < end:
                await self.mx.stop()  # open sessions are cut: a message may lose its final 250
                self.flaps += 1
                await asyncio.sleep(self.down)
                await self.mx.start()
                self.last_up = time.monotonic()
                await asyncio.sleep(self.up)
        finally:
            if not self.mx.running:
                await self.mx.start()
                self.last_up = time.monotonic()


def message_token(m: ReceivedMessage) -> str | None:
    found = _MESSAGE_ID.search(m.content)
    return found.group(1).decode() if found else None


@dataclass(frozen=True)
class Tally:
    accepted: int  # answered 250
    delivered: int  # distinct accepted messages the MX received
    lost: list[str]  # answered 250, never delivered (tokens)
    duplicates: int  # extra deliveries beyond the first
    unacknowledged_delivered: int  # delivered although the client never saw a 250 (reply lost)

    def line(self) -> str:
        return (f"accepted={self.accepted} delivered={self.delivered} lost={len(self.lost)} "
                f"duplicates={self.duplicates} delivered_without_250={self.unacknowledged_delivered}")


def tally(load: Load, received: list[ReceivedMessage]) -> Tally:
    counts = Counter(message_token(m) for m in received)
    accepted = set(load.acked)
    return Tally(
        accepted=len(accepted),
        delivered=sum(1 for t in accepted if counts[t]),
        lost=sorted(t for t in accepted if not counts[t]),
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        unacknowledged_delivered=sum(1 for t in counts if t is not None and t not in accepted),
    )


async def wait_delivered(load: Load, mx: ScriptedMx, timeout: float) -> Tally:
    """Wait until every 250'd message reached the MX (or ``timeout``); returns the tally."""
    deadline = time.monotonic() + timeout
    while True:
        t = tally(load, mx.messages)
        if not t.lost or time.monotonic() > deadline:
            return t
        await asyncio.sleep(0.2)


async def statuses_of(storage_url: str) -> dict[str, tuple[Status, int]]:
    """email_id -> (status, recorded delivery attempts) of every recipient row (one recipient each)."""
    st = await open_storage(storage_url)
    try:
        found: dict[str, tuple[Status, int]] = {}
        async for chunk in st.statuses.stream(StatusFilter(), chunk=5000):
            for r in chunk:
                found[r.email_id] = (r.status, sum(1 for e in r.log if e.kind is LogKind.ATTEMPT))
        return found
    finally:
        await st.close()


@dataclass
class Outcome:
    """The end of a fault run: the tally, the relay's own records, and what is wrong (if anything)."""

    tally: Tally
    drain_seconds: float
    no_status_row: int  # answered 250, no status row
    not_delivered_row: int  # answered 250, status row not DELIVERED
    retried: int  # answered 250 and delivered after more than one attempt (the fault was seen)
    problems: list[str]

    def line(self) -> str:
        return (f"{self.tally.line()} drain={self.drain_seconds:.1f}s no_status_row={self.no_status_row} "
                f"row_not_delivered={self.not_delivered_row} retried={self.retried}")


async def drain_and_verify(relay: ServeProcess, load: Load, mx: ScriptedMx, *, max_duplicates: int,
                           timeout: float = 60) -> Outcome:
    """After the load stopped: wait until everything answered 250 reached the MX and the spool is
    empty, stop the relay (SIGTERM, exit 0), then hold the MX and the database against the 250s."""
    t0 = time.monotonic()
    t = await wait_delivered(load, mx, timeout)
    problems: list[str] = []
    if t.lost:
        problems.append(f"{len(t.lost)} messages answered 250 were never delivered (e.g. {t.lost[:5]})")
    while relay.spool_count():
        if time.monotonic() - t0 > timeout:
            break
        await asyncio.sleep(0.2)
    drained = time.monotonic() - t0
    if relay.spool_count():
        problems.append(f"{relay.spool_count()} messages still in the spool after {timeout} s")
    rc = await relay.stop()
    if rc != 0:
        problems.append(f"serve exited {rc} on SIGTERM")
    rows = await statuses_of(relay.storage_url)
    acked_ids = list(load.acked.values())
    no_row = [e for e in acked_ids if e not in rows]
    not_delivered = [e for e in acked_ids if e in rows and rows[e][0] is not Status.DELIVERED]
    retried = sum(1 for e in acked_ids if e in rows and rows[e][1] > 1)
    if no_row:
        problems.append(f"{len(no_row)} messages answered 250 have no status row (e.g. {no_row[:5]})")
    if not_delivered:
        problems.append(f"{len(not_delivered)} delivered messages are not DELIVERED in the status rows "
                        f"(e.g. {[(e, rows[e][0].name) for e in not_delivered[:5]]})")
    if t.duplicates > max_duplicates:
        problems.append(f"{t.duplicates} duplicate deliveries, more than the window allows ({max_duplicates})")
    if load.permanent:
        problems.append(f"{len(load.permanent)} permanent (5xx) replies to a transient fault: {load.permanent[:5]}")
    if problems:
        problems.append(f"serve log tail:\n{relay.log_tail()}")
    return Outcome(t, drained, len(no_row), len(not_delivered), retried, problems)
