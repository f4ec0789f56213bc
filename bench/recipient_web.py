"""The recipient-facing listener under load: click redirects/s and latency with events recorded.

1. ``mailrelay init --home TMP --smtp 127.0.0.1:P --no-delivery --web 127.0.0.1:W --public-url
   http://127.0.0.1:W`` (SQLite, or ``--storage-url postgresql://...``), ``users add``;
2. ``mailrelay serve --home TMP`` in its own process; ``--messages`` messages (one recipient each)
   submitted over SMTP so that the events have recipient rows to land on;
3. click tokens made with the home's ``web.key`` (as delivery makes them), then ``-c`` concurrent
   keep-alive HTTP clients (50) send ``GET /c/TOKEN`` for ``--seconds`` (after ``--warmup`` s);
4. reports redirects/s, p50/p90/p99/max latency, non-302 answers, the server's CPU and the time
   it waited for a CPU; then waits for the batched event writes and counts the click events in the
   database (must reach every request answered, warm-up included; how long that took is printed);
5. stops the server (SIGTERM), removes TMP (``--keep-home`` keeps it).

The load generator runs on the same machine (2 vCPUs shared with the server): the figures are a
floor for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from relay import tokens
from relay.tokens import LinkKind, LinkToken

BIN = Path(sys.executable).parent / "mailrelay"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(home: Path, *args: str) -> str:
    out = subprocess.run([str(BIN), *args, "--home", str(home)], check=True, capture_output=True, text=True)
    return out.stdout


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat,
    second field): on a shared machine, the part of the latency that is not the server's work."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def submit(port: int, key: str, n: int) -> list[tuple[str, str]]:
    """(email_id, recipient) of n messages submitted over SMTP."""
    out: list[tuple[str, str]] = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.login("bench", key)
        for i in range(n):
            rcpt = f"reader{i}@example.test"
            s.mail("news@shop.example")
            s.rcpt(rcpt)
            code, reply = s.data(f"Subject: {i}\r\nFrom: news@shop.example\r\n\r\nhello\r\n".encode())
            m = re.search(r"queued as (\S+)", reply.decode())
            assert code == 250 and m, reply
            out.append((m.group(1), rcpt))
    return out


async def load(port: int, paths: list[str], concurrency: int, warmup: float,
               seconds: float) -> tuple[list[float], int, int, int]:
    """``concurrency`` keep-alive connections, one request at a time each (no pipelining), with a
    minimal HTTP/1.1 client: aiohttp's client costs more CPU than the server on this VM."""
    lat: list[float] = []
    counts = {"ok": 0, "bad": 0, "all": 0}
    state = {"measuring": False, "stop": False}

    async def worker(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        j = i
        try:
            while not state["stop"]:
                path = paths[j % len(paths)]
                j += concurrency
                t0 = time.perf_counter()
                writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench/1\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"\r\nContent-Length: (\d+)", head, re.I)
                if m and int(m.group(1)):
                    await reader.readexactly(int(m.group(1)))
                counts["all"] += 1
                if state["measuring"]:
                    lat.append(time.perf_counter() - t0)
                    counts["ok" if head.startswith(b"HTTP/1.1 302") else "bad"] += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    state["measuring"] = True
    await asyncio.sleep(seconds)
    state["measuring"] = False
    state["stop"] = True
    await asyncio.gather(*tasks)
    return lat, counts["ok"], counts["bad"], counts["all"]


async def count_clicks(home: Path) -> int:
    from relay.app import open_checked_storage
    from relay.config import load_config

    storage = await open_checked_storage(load_config(home / "mailrelay.toml"))
    try:
        n = 0
        for email_id in (p.name for p in (home / "ids").iterdir()):
            for rec in await storage.statuses.get_message(email_id):
                n += sum(1 for e in rec.log if e.event is not None and e.event.type.value == "click")
        return n
    finally:
        await storage.close()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000 if len(values) > 1 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--concurrency", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--postgres", default=None, metavar="ADMIN_DSN",
                    help="PostgreSQL instead of SQLite: a fresh database is created through this DSN "
                         "(e.g. postgresql://postgres@127.0.0.1:5432/test) and dropped at the end")
    ap.add_argument("--catch-up", type=float, default=60.0,
                    help="seconds to wait after the load for every click event to be written")
    ap.add_argument("--keep-home", action="store_true")
    ap.add_argument("--profile", metavar="FILE",
                    help="sample the server with py-spy during the measured seconds (pip install py-spy); "
                         "FILE gets the collapsed stacks (--format raw), for flamegraph.pl or grep")
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    home = Path(tempfile.mkdtemp(prefix="mailrelay-webbench-"))
    smtp, web = free_port(), free_port()
    init = ["init", "--smtp", f"127.0.0.1:{smtp}", "--no-delivery", "--web", f"127.0.0.1:{web}",
            "--public-url", f"http://127.0.0.1:{web}"]
    database = f"mailrelay_webbench_{os.getpid()}"
    if args.postgres:
        asyncio.run(pg_admin(args.postgres, f'CREATE DATABASE "{database}"'))
        init += ["--storage-url", args.postgres.rsplit("/", 1)[0] + "/" + database]
    try:
        return run(args, home, init, smtp, web)
    finally:
        if args.postgres:
            asyncio.run(pg_admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}"'))
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


async def pg_admin(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def run(args: argparse.Namespace, home: Path, init: list[str], smtp: int, web: int) -> int:
    cli(home, *init)
    key = cli(home, "users", "add", "bench", "--account", "bench").strip().splitlines()[-1]
    text = (home / "mailrelay.toml").read_text()
    text = text.replace("[limits]\n", "[limits]\nmessages_per_second = 100000.0\nmessages_burst = 100000\n", 1)
    (home / "mailrelay.toml").write_text(text)
    server = subprocess.Popen([str(BIN), "serve", "--home", str(home)], stdout=subprocess.DEVNULL,
                              stderr=open(home / "serve.log", "wb"), start_new_session=True)
    try:
        wait_port(smtp)
        wait_port(web)
        sent = submit(smtp, key, args.messages)
        (home / "ids").mkdir()
        for email_id, _ in sent:
            (home / "ids" / email_id).touch()
        time.sleep(1.0)  # status rows are written right after the 250
        secret = tokens.read_secrets(home / "web.key")[0]
        now = int(time.time())
        paths = ["/c/" + tokens.encode(LinkToken(
            LinkKind.CLICK, eid, rcpt, "bench", now, f"https://shop.example/p/{i}?utm_source=mail"), secret)
            for i, (eid, rcpt) in enumerate(sent)]
        cpu0 = cpu_seconds(server.pid)
        spy = None
        if args.profile:
            spy = subprocess.Popen([str(BIN.parent / "py-spy"), "record", "-p", str(server.pid), "-o", args.profile,
                                    "--format", "raw", "-r", "200", "-d", str(int(args.warmup + args.seconds))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load0, client0, wait0 = os.getloadavg()[0], time.process_time(), runqueue_seconds(server.pid)
        lat, ok, bad, answered = asyncio.run(load(web, paths, args.concurrency, args.warmup, args.seconds))
        client = time.process_time() - client0
        waited = runqueue_seconds(server.pid) - wait0
        if spy is not None:
            spy.wait(60)
        cpu = cpu_seconds(server.pid) - cpu0
        print(f"concurrency {args.concurrency}, {args.seconds:.0f} s measured "
              f"({'PostgreSQL' if args.postgres else 'SQLite'})")
        print(f"redirects/s {ok / args.seconds:,.0f}   non-302 {bad}")
        print(f"latency ms  p50 {pct(lat, 0.5):.2f}  p90 {pct(lat, 0.9):.2f}  p99 {pct(lat, 0.99):.2f}  "
              f"max {max(lat) * 1000:.2f}")
        print(f"server CPU  {cpu:.1f} s over the run (warm-up included) = "
              f"{cpu / (args.seconds + args.warmup) * 100:.0f} % of one core, "
              f"{cpu / max(answered, 1) * 1e6:.0f} us per request ({answered:,} requests)")
        print(f"server waited {waited:.1f} s for a CPU (runnable, not running; all its threads), "
              f"{waited / max(answered, 1) * 1e6:.0f} us per request")
        print(f"client CPU  {client:.1f} s = {client / (args.seconds + args.warmup) * 100:.0f} % of one core "
              f"(near 100 %: the load generator, not the server, sets the pace and the latency)")
        print(f"load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after (2 vCPUs; other work included)")
        # events are written in batches as they come; when the database writes fewer per second
        # than were clicked, the rest waits in the queue: wait for it (up to --catch-up s) and say so
        stopped = time.monotonic()
        recorded = 0
        while True:
            time.sleep(0.5)
            recorded = asyncio.run(count_clicks(home))
            if recorded >= answered or time.monotonic() - stopped > args.catch_up:
                break
        print(f"click events recorded {recorded:,} of {answered:,} answered (warm-up included), "
              f"{time.monotonic() - stopped:.1f} s after the load stopped")
        return 0 if bad == 0 and recorded >= answered else 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
