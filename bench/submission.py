#!/usr/bin/env python3
"""Submission benchmark for mailrelay: how fast does the accept path take mail?

By default it starts ``mailrelay serve`` on a fresh temporary data directory (``mailrelay init``
and ``mailrelay users add`` through the CLI, exactly as an operator would); with
``--target HOST:PORT --auth USER:KEY`` it measures a server that is already running instead.

The load generator is a raw asyncio SMTP client: ``-c`` concurrent sessions send ``-n`` messages
of ``-s`` payload bytes (plus ~250 bytes of headers) to ``-r`` recipients each. Every session does
EHLO + AUTH PLAIN; MAIL/RCPT.../DATA are pipelined when the server advertises PIPELINING.
``--msgs-per-conn 1`` opens a new connection (connect, EHLO, AUTH) for every message, like
smtp-source; ``--msgs-per-conn 0`` keeps the sessions open. A warm-up (``--warmup`` messages)
runs first and is not measured.

Figures (printed, and written with ``--json FILE``):

* accepted messages/s = messages answered 250 after the dot / (time of the last such 250 − start)
* p50/p90/p99/max transaction latency: MAIL FROM written → 250 after the dot (set-up excluded)
* session set-up p50/p99: connect → 235 after AUTH PLAIN
* failures by command and reply code (``MAIL 451``, ``dot 451``, ``connect ConnectionRefusedError``)
  with the first reply text seen for each
* the server's CPU seconds during the measured run (utime+stime of its process tree) and its
  peak RSS (summed VmRSS of the process tree, sampled every 100 ms in a thread, plus VmHWM)
* for a server it started: the server's log (warnings/errors by event), its shutdown time and
  exit status, and a consistency check of spool files and database rows against the 250s seen

Standard library only (uvloop when importable). The whole invocation is bounded by
``--max-seconds``; a server it started is always stopped (SIGTERM, then SIGKILL).

    .venv/bin/python bench/submission.py -n 3000 -c 20 -s 2048 --msgs-per-conn 1 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # optional: the relay itself runs on uvloop, so the client may as well
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_MAILRELAY = REPO / ".venv" / "bin" / "mailrelay"
CRLF = b"\r\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_USER = "bench"
BENCH_ACCOUNT = "bench"
#: the shipped per-API_USER limit (limits.messages_per_second, 1000/s with a burst of 2000 when this
#: was written) would make a one-user benchmark partly a benchmark of the rate limiter; by default
#: the bench raises it (see --rate-limit)
BENCH_RATE_LIMIT = "1000000"


def log(msg: str) -> None:
    print(f"[submission {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class TimeBound(BaseException):
    """--max-seconds reached, or SIGINT/SIGTERM: stop everything and clean up.

    A BaseException (like KeyboardInterrupt) so that the event loop does not swallow it when the
    signal handler raises it inside a callback."""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def fmt(v: float | None, nd: int = 0) -> str:
    if v is None or v != v:
        return "nan"
    return f"{v:.{nd}f}"


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# region SMTP client


class SMTPFailure(Exception):
    """A reply that ends the transaction (or the session) unsuccessfully."""

    def __init__(self, stage: str, code: int | str, text: str) -> None:
        super().__init__(f"{stage} {code} {text}")
        self.stage, self.code, self.text = stage, code, text

    @property
    def key(self) -> str:
        return f"{self.stage} {self.code}"


class Client:
    """One SMTP session: greeting, EHLO, AUTH PLAIN, then transactions (RFC 2920 pipelining)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.ext: dict[str, str] = {}
        self.stage = "greeting"

    @classmethod
    async def open(cls, host: str, port: int, user: str | None, password: str | None, timeout: float) -> Client:
        """Connect, greeting, EHLO, AUTH PLAIN; all within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        except (OSError, TimeoutError) as e:
            raise SMTPFailure("connect", "timeout" if isinstance(e, TimeoutError) else type(e).__name__,
                              str(e)) from None
        c = cls(reader, writer)
        try:
            async with asyncio.timeout(timeout):
                return await c._handshake(user, password)
        except TimeoutError:
            c.abort()
            raise SMTPFailure(c.stage, "timeout", f"no reply within {timeout:.0f}s") from None
        except OSError as e:
            c.abort()
            raise SMTPFailure(c.stage, type(e).__name__, str(e)) from None
        except BaseException:
            c.abort()
            raise

    async def _handshake(self, user: str | None, password: str | None) -> Client:
        code, lines = await self.reply()
        if code != 220:
            raise SMTPFailure("greeting", code, " ".join(lines))
        self.stage = "EHLO"
        self.w.write(b"EHLO submission-bench.localdomain\r\n")
        code, lines = await self.reply()
        if code != 250:
            raise SMTPFailure("EHLO", code, " ".join(lines))
        for ln in lines[1:]:
            k, _, v = ln.partition(" ")
            self.ext[k.upper()] = v
        if user is not None:
            self.stage = "AUTH"
            if "AUTH" not in self.ext:
                raise SMTPFailure("AUTH", "not-advertised", "EHLO lists no AUTH (TLS required?)")
            token = base64.b64encode(b"\0" + user.encode() + b"\0" + (password or "").encode())
            self.w.write(b"AUTH PLAIN " + token + CRLF)
            code, lines = await self.reply()
            if code != 235:
                raise SMTPFailure("AUTH", code, " ".join(lines))
        return self

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.ext

    async def reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        while True:
            ln = await self.r.readline()
            if not ln:
                raise SMTPFailure(self.stage, "closed", "connection closed by the server")
            s = ln.rstrip(b"\r\n").decode("latin-1")
            lines.append(s[4:])
            if len(s) < 4 or s[3] != "-":
                if not s[:3].isdigit():
                    raise SMTPFailure(self.stage, "garbled", s[:120])
                return int(s[:3]), lines

    async def transaction(self, mail_from: bytes, rcpts: list[bytes], data: bytes,
                          refused: Counter[str], texts: dict[str, str], timeout: float) -> str:
        """Send one message; ``data`` is dot-stuffed and ends with CRLF. Returns the final reply text.

        Raises SMTPFailure when the message was not accepted (code "timeout" when the whole
        transaction took longer than ``timeout``; the session is then unusable). Refused
        recipients of an otherwise accepted message are counted in ``refused``."""
        try:
            async with asyncio.timeout(timeout):
                return await self._transaction(mail_from, rcpts, data, refused, texts)
        except TimeoutError:
            raise SMTPFailure(self.stage, "timeout", f"transaction not done within {timeout:.0f}s") from None

    async def _transaction(self, mail_from: bytes, rcpts: list[bytes], data: bytes,
                           refused: Counter[str], texts: dict[str, str]) -> str:
        cmds = [b"MAIL FROM:<" + mail_from + b">", *(b"RCPT TO:<" + r + b">" for r in rcpts), b"DATA"]
        stages = ["MAIL", *(["RCPT"] * len(rcpts)), "DATA"]
        got: list[tuple[int, str]] = []
        if self.pipelining:
            self.w.write(CRLF.join(cmds) + CRLF)
            for st in stages:
                self.stage = st
                code, lines = await self.reply()
                got.append((code, " ".join(lines)))
        else:
            for st, cmd in zip(stages, cmds, strict=True):
                if st == "DATA" and not any(c in (250, 251) for c, _ in got[1:]):
                    break  # no recipient: do not send DATA
                self.stage = st
                self.w.write(cmd + CRLF)
                code, lines = await self.reply()
                got.append((code, " ".join(lines)))
                if st == "MAIL" and code >= 400:
                    break
        failure: SMTPFailure | None = None
        mcode, mtext = got[0]
        if mcode != 250:
            failure = SMTPFailure("MAIL", mcode, mtext)
        rcpt_replies = got[1 : 1 + len(rcpts)]
        ok = [c for c, _ in rcpt_replies if c in (250, 251)]
        if failure is None:
            for c, t in rcpt_replies:
                if c not in (250, 251):
                    refused[f"RCPT {c}"] += 1
                    texts.setdefault(f"RCPT {c}", t)
            if not ok:
                c, t = rcpt_replies[0] if rcpt_replies else (0, "no reply")
                failure = SMTPFailure("RCPT", c, t)
        dcode, dtext = got[-1] if len(got) == len(cmds) else (0, "not sent")
        if failure is None and dcode != 354:
            failure = SMTPFailure("DATA", dcode, dtext)
        if failure is not None:
            if dcode == 354:  # the server wants data although the transaction is dead: end it empty
                self.stage = "dot"
                self.w.write(b".\r\n")
                await self.reply()
            self.stage = "RSET"
            self.w.write(b"RSET\r\n")
            await self.reply()
            raise failure
        self.stage = "dot"
        self.w.write(data)
        self.w.write(b".\r\n")
        if self.w.transport.get_write_buffer_size() > 1 << 16:
            await self.w.drain()
        code, lines = await self.reply()
        if code != 250:
            raise SMTPFailure("dot", code, " ".join(lines))
        return " ".join(lines)

    async def quit(self) -> None:
        try:
            self.stage = "QUIT"
            self.w.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 5)
        except (SMTPFailure, OSError, TimeoutError):
            pass
        self.abort()

    def abort(self) -> None:
        try:
            self.w.close()
        except (OSError, RuntimeError):
            pass


def make_payload(size: int) -> bytes:
    """``size`` bytes of 78-byte lines (like smtp-source -l); no line starts with a dot."""
    line = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd" + CRLF
    n = max(size, 2)
    return (line * (n // len(line) + 1))[: n - 2] + CRLF


# endregion

# region load generator


@dataclass
class LoadSpec:
    host: str
    port: int
    user: str | None
    password: str | None
    messages: int
    concurrency: int
    size: int
    rcpts: int
    per_conn: int
    smtp_timeout: float
    domains: int
    tag: str


@dataclass
class LoadState:
    left: int
    accepted: int = 0
    failed: int = 0
    rcpts_accepted: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    texts: dict[str, str] = field(default_factory=dict)
    queue_ids: list[str] = field(default_factory=list)
    no_queue_id: int = 0
    t_last: float | None = None
    latencies: list[float] = field(default_factory=list)
    setups: list[float] = field(default_factory=list)

    def fail(self, e: SMTPFailure) -> None:
        self.failed += 1
        self.failures[e.key] += 1
        self.texts.setdefault(e.key, e.text[:200])


_QUEUED = re.compile(r"queued as (\S+)")


async def run_load(spec: LoadSpec, timeout: float) -> dict[str, Any]:
    payload = make_payload(spec.size)
    mail_from = b"bench@submission-bench.example"
    rlists = [
        [b"rcpt%d.%d@d%d.submission-bench.example" % (i, j, (i + j) % max(1, spec.domains)) for j in range(spec.rcpts)]
        for i in range(max(1, min(spec.messages, 1000)))
    ]
    st = LoadState(left=spec.messages)
    seq = 0

    def message(n: int, sid: int) -> bytes:
        hdr = (
            f"From: <bench@submission-bench.example>\r\nTo: <{rlists[n % len(rlists)][0].decode()}>\r\n"
            f"Subject: submission bench {spec.tag} {n}\r\n"
            f"Message-ID: <{spec.tag}.{n}.{sid}@submission-bench.example>\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
        ).encode()
        return hdr + payload

    async def session(sid: int) -> None:
        nonlocal seq
        connect_failures = 0
        while st.left > 0:
            st.left -= 1  # reserve the first message of this connection before connecting
            t0 = time.perf_counter()
            try:
                c = await Client.open(spec.host, spec.port, spec.user, spec.password, spec.smtp_timeout)
            except SMTPFailure as e:
                st.fail(e)  # the reserved message is lost: it counts as a failure
                connect_failures += 1
                if connect_failures > 50:
                    return
                await asyncio.sleep(min(1.0, 0.02 * connect_failures))
                continue
            st.setups.append(time.perf_counter() - t0)
            sent = 0
            reserved = True
            try:
                while reserved or (st.left > 0 and (spec.per_conn <= 0 or sent < spec.per_conn)):
                    if not reserved:
                        st.left -= 1
                    reserved = False
                    n = seq
                    seq += 1
                    data = message(n, sid)
                    t1 = time.perf_counter()
                    sent += 1
                    try:
                        text = await c.transaction(mail_from, rlists[n % len(rlists)], data, st.refused, st.texts,
                                                   spec.smtp_timeout)
                    except SMTPFailure as e:
                        st.fail(e)
                        if e.code in ("closed", "garbled", "timeout") or (isinstance(e.code, int) and e.code == 421):
                            raise
                        continue
                    t2 = time.perf_counter()
                    st.latencies.append(t2 - t1)
                    st.accepted += 1
                    st.t_last = t2
                    m = _QUEUED.search(text)
                    if m:
                        st.queue_ids.append(m.group(1))
                    else:
                        st.no_queue_id += 1
                        st.texts.setdefault("dot 250 without 'queued as'", text[:200])
            except SMTPFailure:
                c.abort()  # session lost; the failure was counted
                continue
            except OSError as e:
                st.fail(SMTPFailure(c.stage, type(e).__name__, str(e)))
                c.abort()
                continue
            await c.quit()

    ru0 = resource.getrusage(resource.RUSAGE_THREAD)  # this (event loop) thread, not the sampler
    t_start = time.perf_counter()
    tasks = [asyncio.ensure_future(session(i)) for i in range(spec.concurrency)]
    _done, pending = await asyncio.wait(tasks, timeout=max(1.0, timeout))
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for t in _done:
        if t.exception() is not None:
            exc = t.exception()
            st.failures[f"client-bug {type(exc).__name__}"] += 1
            st.texts.setdefault(f"client-bug {type(exc).__name__}", repr(exc)[:200])
    t_end = time.perf_counter()
    ru1 = resource.getrusage(resource.RUSAGE_THREAD)
    acc_secs = (st.t_last or t_end) - t_start
    dup_ids = len(st.queue_ids) - len(set(st.queue_ids))
    return {
        "messages": spec.messages,
        "accepted": st.accepted,
        "failed": st.failed,
        "not_attempted": max(0, st.left) if pending else 0,
        "timed_out": bool(pending),
        "in_flight_at_timeout": len(pending),
        "failures": dict(st.failures.most_common()),
        "refused_recipients": dict(st.refused.most_common()),
        "reply_texts": st.texts,
        "duplicate_queue_ids": dup_ids,
        "accepted_without_queue_id": st.no_queue_id,
        "accept_secs": acc_secs,
        "wall_secs": t_end - t_start,
        "accept_mps": st.accepted / acc_secs if acc_secs > 0 else 0.0,
        "p50_ms": pct(st.latencies, 50) * 1000,
        "p90_ms": pct(st.latencies, 90) * 1000,
        "p99_ms": pct(st.latencies, 99) * 1000,
        "max_ms": max(st.latencies) * 1000 if st.latencies else float("nan"),
        "sessions": len(st.setups),
        "setup_p50_ms": pct(st.setups, 50) * 1000,
        "setup_p99_ms": pct(st.setups, 99) * 1000,
        "setup_max_ms": max(st.setups) * 1000 if st.setups else float("nan"),
        "client_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "_queue_ids": st.queue_ids,
    }


# endregion

# region server process tree: CPU and RSS from /proc


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime, cutime+cstime) in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rfind(b")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                k, _, v = ln.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = _stat(int(d))
            if s is not None:
                children.setdefault(s[0], []).append(int(d))
    if not os.path.exists(f"/proc/{root}"):
        return []
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, ()))
    return out


def tree_cpu_ticks(root: int) -> int | None:
    pids = process_tree(root)
    if not pids:
        return None
    total = 0
    for p in pids:
        s = _stat(p)
        if s is not None:
            total += s[1] + (s[2] if p == root else 0)
    return total


class TreeSampler(threading.Thread):
    """Every ``interval`` s: summed VmRSS (and thread count) of the server's process tree.

    A thread rather than an asyncio task, so a busy load generator does not stretch the interval."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.peak_rss_kb = 0
        self.window_peak_rss_kb = 0
        self.peak_threads = 0
        self.samples = 0
        self.window_samples = 0

    def sample(self) -> None:
        pids = process_tree(self.pid)
        if not pids:
            return
        rss = threads = 0
        for p in pids:
            st = _status_kb(p, ("VmRSS", "Threads"))
            rss += st.get("VmRSS", 0)
            threads += st.get("Threads", 0)
        with self._lock:
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.window_peak_rss_kb = max(self.window_peak_rss_kb, rss)
            self.peak_threads = max(self.peak_threads, threads)
            self.samples += 1
            self.window_samples += 1

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def new_window(self) -> None:
        with self._lock:
            self.window_peak_rss_kb = 0
            self.window_samples = 0

    def window(self) -> tuple[int, int]:
        self.sample()
        with self._lock:
            return self.window_peak_rss_kb, self.window_samples

    def halt(self) -> None:
        self._halt.set()


# endregion

# region the server we start


def set_toml_keys(path: Path, values: dict[str, str]) -> None:
    """Set dotted keys (``limits.messages_per_second``) in a rendered mailrelay.toml.

    ``mailrelay init`` writes every key, unset ones as a commented default (``# key = default``);
    the first line for the key in its section is replaced by an active one. A key that is not in
    the file at all is added under its section header."""
    lines = path.read_text(encoding="utf-8").splitlines()
    section = ""
    done: set[str] = set()
    out: list[str] = []
    key_line = re.compile(r"^\s*(#\s*)?([A-Za-z0-9_]+)\s*=")
    for ln in lines:
        m = re.match(r"^\s*\[([A-Za-z0-9_.]+)\]\s*$", ln)
        if m:
            section = m.group(1)
        else:
            km = key_line.match(ln)
            full = f"{section}.{km.group(2)}" if km else ""
            if km and full in values:
                if full in done:
                    if not km.group(1):  # a second active line for the key: comment it out
                        ln = "# " + ln
                else:
                    ln = f"{km.group(2)} = {values[full]}"
                    done.add(full)
        out.append(ln)
    for full, v in values.items():
        if full in done:
            continue
        sect, _, key = full.rpartition(".")
        try:
            i = out.index(f"[{sect}]")
            out.insert(i + 1, f"{key} = {v}")
        except ValueError:
            out += ["", f"[{sect}]", f"{key} = {v}"]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


class RelayServer:
    """``mailrelay serve`` on its own data directory, in its own session (process group)."""

    def __init__(self, exe: Path, home: Path, port: int) -> None:
        self.exe, self.home, self.port = exe, home, port
        self.log_path = home / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def cli(self, *args: str, timeout: float = 120) -> str:
        r = subprocess.run([str(self.exe), *args], capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"mailrelay {' '.join(args)} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout

    def setup(self, user: str, key: str, overrides: dict[str, str], relayhost: str | None) -> None:
        home = str(self.home)
        # Without --relayhost the server only accepts (--no-delivery): the bench must never make it
        # look up MX records of its recipient domains outside loopback.
        delivery = ["--relayhost", relayhost] if relayhost else ["--no-delivery"]
        self.cli("init", "--home", home, "--smtp", f"127.0.0.1:{self.port}", *delivery)
        if overrides:
            cfg = self.home / "mailrelay.toml"
            set_toml_keys(cfg, overrides)
            effective = self.cli("config", "check", "--home", home)
            for k, v in overrides.items():
                m = re.search(rf"^{re.escape(k)} = (.*)$", effective, re.M)
                if not m or not _same_value(m.group(1), v):
                    raise RuntimeError(f"could not set {k} = {v} in {cfg} (config check says {m and m.group(1)})")
            log("config overrides: " + ", ".join(f"{k} = {v}" for k, v in overrides.items()))
        self.cli("users", "add", user, "--account", BENCH_ACCOUNT, f"--key={key}", "--home", home)

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(self.exe), "serve", "--home", str(self.home)], stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        log(f"started mailrelay serve pid={self.proc.pid} home={self.home} port={self.port}")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"mailrelay serve exited (status {self.proc and self.proc.returncode}) "
                                   f"before listening:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    greeting = s.recv(512)
                    s.sendall(b"QUIT\r\n")
                    if greeting.startswith(b"220"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"mailrelay serve did not greet on 127.0.0.1:{self.port} within {timeout:.0f}s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float) -> dict[str, Any]:
        """SIGTERM, wait ``grace`` s, then SIGKILL (to the server's own process group)."""
        info: dict[str, Any] = {"signal": None, "exit_status": None, "stop_secs": None, "killed": False}
        p = self.proc
        if p is None:
            return info
        t0 = time.monotonic()
        if p.poll() is None:
            info["signal"] = "SIGTERM"
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"mailrelay serve did not stop within {grace:.0f}s of SIGTERM: SIGKILL")
                info["killed"] = True
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        else:
            info["exited_before_stop"] = True
        info["stop_secs"] = round(time.monotonic() - t0, 3)
        info["exit_status"] = p.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return info


def _same_value(a: str, b: str) -> bool:
    a, b = a.strip().strip('"'), b.strip().strip('"')
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def summarize_log(path: Path, limit: int = 12) -> dict[str, Any]:
    """Counts of the server's JSON log lines by level, and its warnings/errors by event."""
    levels: Counter[str] = Counter()
    events: Counter[str] = Counter()
    examples: dict[str, str] = {}
    other = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for ln in text.splitlines():
        try:
            doc = json.loads(ln)
            if not isinstance(doc, dict):
                raise ValueError
        except ValueError:
            if ln.strip():
                other += 1
                if other <= 5:
                    examples.setdefault(f"non-json line {other}", ln[:300])
            continue
        lvl = str(doc.get("level", "?"))
        levels[lvl] += 1
        if lvl in ("warning", "error", "critical"):
            key = f"{lvl} {doc.get('event') or doc.get('msg', '')[:60]}"
            events[key] += 1
            if key not in examples:
                ex = {k: v for k, v in doc.items() if k != "exc"}
                if "exc" in doc:
                    ex["exc_last_line"] = str(doc["exc"]).strip().splitlines()[-1]
                examples[key] = json.dumps(ex)[:400]
    return {"levels": dict(levels), "non_json_lines": other, "problems": dict(events.most_common(limit)),
            "examples": examples}


def consistency(home: Path, queue_ids: list[str], delivering: bool) -> dict[str, Any]:
    """After the server stopped: spool files and database rows against the 250s the client saw.

    Every accepted message must have a message row, and nothing may be left in spool/tmp; without
    delivery (the default) every accepted message must also still be in spool/queue."""
    out: dict[str, Any] = {"client_250s": len(queue_ids)}
    qdir, tdir = home / "spool" / "queue", home / "spool" / "tmp"
    out["spool_tmp_files"] = len(list(tdir.iterdir())) if tdir.is_dir() else 0
    if qdir.is_dir() and not delivering:
        names = {p.name.split(".", 1)[0] for p in qdir.iterdir()}
        out["spool_queue_files"] = len(names)
        out["accepted_missing_from_spool"] = sum(1 for q in queue_ids if q not in names)
    db = home / "mailrelay.sqlite3"
    if db.exists():
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                out["db_messages"] = con.execute("SELECT count(*) FROM messages").fetchone()[0]
                out["db_recipients"] = con.execute("SELECT count(*) FROM recipients").fetchone()[0]
                known = set()
                ids = list(queue_ids)
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    q = f"SELECT email_id FROM messages WHERE email_id IN ({','.join('?' * len(chunk))})"
                    known.update(r[0] for r in con.execute(q, chunk))
                out["accepted_missing_from_db"] = len(set(ids) - known)
            finally:
                con.close()
        except sqlite3.Error as e:
            out["db_error"] = str(e)
    return out


# endregion

# region main


def machine_note() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = _status_kb_file("/proc/meminfo", "MemTotal")
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem / 1048576, 1) if mem else None,
            "kernel": platform.release(), "python": platform.python_version(),
            "loop": "uvloop " + uvloop.__version__ if uvloop else "asyncio", "loadavg_before": os.getloadavg()}


def _status_kb_file(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for ln in f:
                if ln.startswith(key + ":"):
                    return int(ln.split()[1])
    except (OSError, ValueError):
        pass
    return 0


async def bench(args: argparse.Namespace, host: str, port: int, user: str | None, password: str | None,
                sampler: TreeSampler | None, pid: int | None, deadline: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    got_signal: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        got_signal.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    def spec(messages: int, tag: str) -> LoadSpec:
        return LoadSpec(host, port, user, password, messages, args.concurrency, args.size, args.rcpts,
                        args.msgs_per_conn, args.smtp_timeout, args.domains, tag)

    async def bounded(coro: Any) -> dict[str, Any]:
        task = asyncio.ensure_future(coro)
        halt = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, halt}, return_when=asyncio.FIRST_COMPLETED)
        halt.cancel()
        if stop.is_set() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise TimeBound(f"interrupted by {', '.join(got_signal)}")
        return task.result()

    out: dict[str, Any] = {"runs": []}
    if args.warmup > 0:
        w = await bounded(run_load(spec(args.warmup, "warmup"), deadline - time.monotonic()))
        log(f"warm-up: {w['accepted']}/{args.warmup} accepted, {w['failed']} failed "
            f"{w['failures'] if w['failures'] else ''}")
        out["warmup"] = w
    for i in range(args.repeat):
        if args.pause and i:
            await asyncio.sleep(args.pause)
        if sampler:
            sampler.new_window()
        cpu0 = tree_cpu_ticks(pid) if pid else None
        r = await bounded(run_load(spec(args.messages, f"run{i + 1}"), deadline - time.monotonic()))
        cpu1 = tree_cpu_ticks(pid) if pid else None
        if cpu0 is not None and cpu1 is not None:
            r["server_cpu_s"] = (cpu1 - cpu0) / CLK_TCK
            r["msgs_per_cpu_s"] = r["accepted"] / r["server_cpu_s"] if r["server_cpu_s"] > 0 else float("nan")
        if sampler:
            peak, n = sampler.window()
            r["peak_rss_mb"] = peak / 1024
            r["rss_samples"] = n
        out["runs"].append(r)
        print_run(i + 1, r)
        if time.monotonic() > deadline:
            log("time bound reached; no further repetitions")
            break
    return out


def print_run(i: int, r: dict[str, Any]) -> None:
    print(f"run {i}: accepted {r['accepted']}/{r['messages']} in {r['accept_secs']:.2f}s = "
          f"{fmt(r['accept_mps'])} msgs/s | transaction p50 {fmt(r['p50_ms'], 1)} ms p99 {fmt(r['p99_ms'], 1)} ms "
          f"max {fmt(r['max_ms'], 1)} ms | setup p50 {fmt(r['setup_p50_ms'], 1)} ms ({r['sessions']} sessions) | "
          f"server cpu {fmt(r.get('server_cpu_s'), 2)} s peak rss {fmt(r.get('peak_rss_mb'), 1)} MB | "
          f"client cpu {fmt(r['client_cpu_s'], 2)} s", flush=True)
    if r["failures"] or r["refused_recipients"]:
        print(f"run {i}: failures {json.dumps(r['failures'])} refused rcpts {json.dumps(r['refused_recipients'])}")
        for k, t in r["reply_texts"].items():
            print(f"run {i}:   {k}: {t}")
    if r["timed_out"]:
        print(f"run {i}: TIMED OUT with {r['in_flight_at_timeout']} sessions in flight")
    if r["duplicate_queue_ids"]:
        print(f"run {i}: {r['duplicate_queue_ids']} DUPLICATE queue ids in 250 replies")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=5000, help="messages per measured run (5000)")
    ap.add_argument("-c", "--concurrency", type=int, default=20, help="concurrent SMTP sessions (20)")
    ap.add_argument("-s", "--size", type=int, default=2048, help="payload bytes per message, plus headers (2048)")
    ap.add_argument("-r", "--rcpts", type=int, default=1, help="recipients per message (1)")
    ap.add_argument("--domains", type=int, default=1, help="spread recipients over N domains (1)")
    ap.add_argument("--msgs-per-conn", type=int, default=1,
                    help="1 = new connection + EHLO + AUTH per message (default, like smtp-source); "
                         "0 = keep sessions open; N = N messages per connection")
    ap.add_argument("--smtp-timeout", type=float, default=60,
                    help="bound on one session set-up and on one transaction; then the session is dropped (60 s)")
    ap.add_argument("--warmup", type=int, default=200, help="warm-up messages, not measured (200)")
    ap.add_argument("--repeat", type=int, default=1, help="measured runs; the summary is their median (1)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between measured runs (1)")
    ap.add_argument("--max-seconds", type=float, default=600, help="bound on the whole invocation (600)")
    ap.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    ap.add_argument("--target", metavar="HOST:PORT", help="measure a running server instead of starting one")
    ap.add_argument("--auth", metavar="USER:KEY", help="AUTH PLAIN credentials for --target")
    ap.add_argument("--server-pid", type=int, help="with --target: pid of the server (CPU and RSS)")
    ap.add_argument("--mailrelay", default=str(DEFAULT_MAILRELAY), help="mailrelay executable (the repo's venv)")
    ap.add_argument("--home", help="data directory for the started server (default: a new temp dir)")
    ap.add_argument("--keep-home", action="store_true", help="keep the temp data directory (logs, spool, db)")
    ap.add_argument("--port", type=int, default=0, help="port for the started server (default: a free one)")
    ap.add_argument("--rate-limit", default=BENCH_RATE_LIMIT,
                    help="limits.messages_per_second (and messages_burst) of the started server; "
                         f"'default' keeps the shipped per-API_USER limit (bench default {BENCH_RATE_LIMIT})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra mailrelay.toml override for the started server, e.g. spool.group_commit_max=64")
    ap.add_argument("--relayhost", metavar="HOST:PORT",
                    help="started server: deliver ALL mail to this HOST:PORT (e.g. an smtp-sink on loopback); "
                         "default: `init --no-delivery`, the accept path alone")
    ap.add_argument("--start-timeout", type=float, default=60, help="wait for the server's greeting (60 s)")
    ap.add_argument("--stop-grace", type=float, default=35,
                    help="SIGTERM → SIGKILL delay (35 s; the relay allows sessions and deliveries 20-30 s)")
    ap.add_argument("--no-uvloop", action="store_true", help="plain asyncio for the load generator")
    return ap


def median(runs: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in runs if key in r and r[key] == r[key]]
    return statistics.median(vals) if vals else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.target and not args.auth:
        raise SystemExit("--target needs --auth USER:KEY")
    if args.concurrency < 1 or args.messages < 1 or args.rcpts < 1:
        raise SystemExit("-c, -n and -r must be >= 1")
    started = time.monotonic()
    stop_budget = args.stop_grace + 12
    deadline = started + max(5.0, args.max_seconds - stop_budget)  # time left for the load itself

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeBound(f"--max-seconds {args.max_seconds:.0f} reached")

    def on_term(signum: int, frame: Any) -> None:
        raise TimeBound(f"signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.alarm(max(2, int(args.max_seconds - stop_budget + 2)))  # hard backstop behind `deadline`

    machine = machine_note()
    server: RelayServer | None = None
    sampler: TreeSampler | None = None
    home: Path | None = None
    temp_home = False
    result: dict[str, Any] = {}
    stop_info: dict[str, Any] = {}
    vmhwm_kb = 0
    error: str | None = None
    user = password = None
    try:
        if args.target:
            host, port = parse_hostport(args.target)
            user, _, password = args.auth.partition(":")
            pid = args.server_pid
        else:
            exe = Path(args.mailrelay)
            if not exe.exists():
                raise SystemExit(f"{exe} not found (make the venv: make run / pip install -e .)")
            if args.home:
                home = Path(args.home).resolve()
                home.mkdir(parents=True, exist_ok=True)
            else:
                home = Path(tempfile.mkdtemp(prefix="mailrelay-bench-"))
                temp_home = True
            host, port = "127.0.0.1", args.port or free_port()
            user, password = BENCH_USER, secrets.token_hex(16)
            overrides: dict[str, str] = {}
            if args.rate_limit != "default":
                overrides["limits.messages_per_second"] = f"{float(args.rate_limit)!r}"
                overrides["limits.messages_burst"] = str(int(float(args.rate_limit)))
            if args.concurrency + 5 > 50:  # shipped smtp.max_connections_per_ip = 50
                overrides["smtp.max_connections_per_ip"] = str(2 * args.concurrency + 10)
            for kv in args.set:
                k, _, v = kv.partition("=")
                overrides[k.strip()] = v.strip()
            server = RelayServer(exe, home, port)
            server.setup(user, password, overrides, args.relayhost)
            server.start()
            server.wait_ready(args.start_timeout)
            pid = server.pid
        if pid:
            sampler = TreeSampler(pid)
            sampler.start()
        if not args.no_uvloop and uvloop is not None:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        result = asyncio.run(bench(args, host, port, user, password, sampler, pid, deadline))
        if pid:
            vmhwm_kb = sum(_status_kb(p, ("VmHWM",)).get("VmHWM", 0) for p in process_tree(pid))
    except TimeBound as e:
        error = str(e)
        log(f"stopping early: {e}")
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        error = str(e)
        log(f"error: {e}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nothing may interrupt the clean-up
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if sampler:
            sampler.halt()
        if server is not None:
            stop_info = server.stop(args.stop_grace)
            log(f"mailrelay serve stopped: {stop_info}")

    runs = result.get("runs", [])
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "args": dict(vars(args)),
        "argv": sys.argv,
        "error": error,
        "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
        "warmup": {k: v for k, v in result.get("warmup", {}).items() if not k.startswith("_")},
        "server": {"pid": server.pid if server else args.server_pid, "vmhwm_mb": vmhwm_kb / 1024,
                   "peak_rss_mb_lifetime": (sampler.peak_rss_kb / 1024) if sampler else None,
                   "peak_threads": sampler.peak_threads if sampler else None, **stop_info},
    }
    if server is not None and server.proc is not None and home is not None:
        report["server"]["log"] = summarize_log(server.log_path)
        ids = [q for r in [result.get("warmup", {}), *runs] for q in r.get("_queue_ids", [])]
        report["server"]["consistency"] = consistency(home, ids, bool(args.relayhost))
    if runs:
        report["median"] = {k: median(runs, k) for k in (
            "accept_mps", "p50_ms", "p99_ms", "setup_p50_ms", "server_cpu_s", "msgs_per_cpu_s", "peak_rss_mb",
            "client_cpu_s")}
        report["median"]["failed_total"] = sum(r["failed"] for r in runs)

    srv = report["server"]
    if srv.get("log"):
        lg = srv["log"]
        print(f"server log: {lg['levels']} non-json lines {lg['non_json_lines']}")
        for k, n in lg["problems"].items():
            print(f"server log:   {n} x {k}: {lg['examples'].get(k, '')}")
        for k, v in lg["examples"].items():
            if k.startswith("non-json"):
                print(f"server log:   {k}: {v}")
    if "consistency" in srv:
        print(f"consistency: {json.dumps(srv['consistency'])}")
    if stop_info:
        print(f"server stop: {json.dumps(stop_info)}")
    if runs:
        m = report["median"]
        failures: Counter[str] = Counter()
        for r in runs:
            failures.update(r["failures"])
        print(f"accept_mps={fmt(m['accept_mps'])} p50_ms={fmt(m['p50_ms'], 1)} p99_ms={fmt(m['p99_ms'], 1)} "
              f"setup_p50_ms={fmt(m['setup_p50_ms'], 1)} server_cpu_s={fmt(m['server_cpu_s'], 2)} "
              f"msgs_per_cpu_s={fmt(m['msgs_per_cpu_s'])} peak_rss_mb={fmt(m['peak_rss_mb'], 1)} "
              f"vmhwm_mb={fmt(srv['vmhwm_mb'], 1)} client_cpu_s={fmt(m['client_cpu_s'], 2)} "
              f"failed={m['failed_total']} failures={json.dumps(dict(failures))}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        log(f"wrote {args.json}")
    if temp_home and home is not None:
        if args.keep_home or error:
            log(f"kept the server's data directory: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    bad = bool(error) or not runs or any(r["failed"] or r["timed_out"] or r["duplicate_queue_ids"] for r in runs)
    cons = srv.get("consistency", {})
    if cons.get("accepted_missing_from_spool") or cons.get("accepted_missing_from_db") or cons.get("spool_tmp_files"):
        bad = True
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
