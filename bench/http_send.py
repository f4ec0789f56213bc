#!/usr/bin/env python3
"""HTTP sending vs SMTP submission, same mail, same server, same run.

Starts ``mailrelay serve`` on a fresh temporary data directory (``mailrelay init``/``users add``
through the CLI, accept-only: no delivery) with the HTTP API on, then alternates rounds: ``-c``
concurrent SMTP sessions (kept open, EHLO + AUTH PLAIN once, pipelined MAIL/RCPT/DATA; the client
of ``bench/submission.py``) submit ``-n`` messages, then ``-c`` concurrent keep-alive HTTP clients
POST the same number to ``/v1/mail/send``. The mail is the same: one recipient, a text body of
``-s`` bytes; the SMTP side sends exactly the MIME the HTTP side has the server build
(``relay/http/compose.py``). Figures per round and the median of the rounds: accepted messages/s
(answered 250 / 200 with an email id) and p50/p99 latency (request written → answer).

Standard library plus aiohttp (a dependency of mailrelay). Bounded by ``--max-seconds``; the server
is always stopped.

    .venv/bin/python bench/http_send.py -n 2000 -c 20 -s 2048 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import submission as smtp_bench  # noqa: E402  (bench/submission.py: its SMTP client and server runner)

from relay.http.compose import build  # noqa: E402
from relay.http.send_body import parse_send  # noqa: E402

SENDER = "bench@bench.example"


def mail_body(size: int) -> dict[str, Any]:
    line = "The quick brown fox jumps over the lazy dog 0123456789.\n"
    text = (line * (size // len(line) + 1))[:size]
    return {"from": SENDER, "to": ["rcpt@example.com"],
            "body": {"subject": "bench message", "content": {"text": text}}}


def smtp_data(body: dict[str, Any]) -> bytes:
    raw = build(parse_send(body), 0)
    stuffed = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in raw.split(b"\r\n"))
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def figures(kind: str, ok: int, failures: Counter[str], latencies: list[float], secs: float) -> dict[str, Any]:
    return {"kind": kind, "accepted": ok, "msgs_per_s": round(ok / secs, 1) if secs else 0.0,
            "p50_ms": round(pct(latencies, 50) * 1000, 2), "p99_ms": round(pct(latencies, 99) * 1000, 2),
            "failures": dict(failures)}


async def smtp_round(port: int, user: str, key: str, n: int, c: int, data: bytes) -> dict[str, Any]:
    counter = iter(range(n))
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    texts: dict[str, str] = {}

    async def worker() -> None:
        client = await smtp_bench.Client.open("127.0.0.1", port, user, key, 30)
        try:
            for _ in counter:
                t0 = time.perf_counter()
                try:
                    await client.transaction(SENDER.encode(), [b"rcpt@example.com"], data, failures,
                                             texts, 30)
                    latencies.append(time.perf_counter() - t0)
                except smtp_bench.SMTPFailure as e:
                    failures[e.key] += 1
        finally:
            await client.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return figures("smtp", len(latencies), failures, latencies, time.perf_counter() - t0)


async def http_round(base: str, user: str, key: str, n: int, c: int, body: dict[str, Any]) -> dict[str, Any]:
    counter = iter(range(n))
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode(),
            "Content-Type": "application/json"}
    payload = json.dumps(body).encode()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
        async def worker() -> None:
            for _ in counter:
                t0 = time.perf_counter()
                async with session.post(base + "/v1/mail/send", data=payload, headers=auth) as r:
                    answer = await r.json()
                if r.status == 200 and answer.get("email_ids"):
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures[f"HTTP {r.status}"] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        return figures("http", len(latencies), failures, latencies, time.perf_counter() - t0)


async def run(args: argparse.Namespace, smtp_port: int, http_port: int, user: str, key: str) -> list[dict[str, Any]]:
    body = mail_body(args.size)
    data = smtp_data(body)
    base = f"http://127.0.0.1:{http_port}"
    out: list[dict[str, Any]] = []
    await smtp_round(smtp_port, user, key, args.warmup, args.concurrency, data)  # warm-up, not measured
    await http_round(base, user, key, args.warmup, args.concurrency, body)
    for i in range(args.rounds):
        for kind in ("smtp", "http") if i % 2 == 0 else ("http", "smtp"):  # alternate: no order bias
            r = (await smtp_round(smtp_port, user, key, args.messages, args.concurrency, data) if kind == "smtp"
                 else await http_round(base, user, key, args.messages, args.concurrency, body))
            r["round"] = i + 1
            smtp_bench.log(json.dumps(r))
            out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--messages", type=int, default=2000, help="messages per round and side")
    p.add_argument("-c", "--concurrency", type=int, default=20)
    p.add_argument("-s", "--size", type=int, default=2048, help="text body bytes")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--max-seconds", type=float, default=600)
    p.add_argument("--mailrelay", type=Path, default=smtp_bench.DEFAULT_MAILRELAY)
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="mailrelay-http-send-") as tmp:
        smtp_port, http_port = smtp_bench.free_port(), smtp_bench.free_port()
        server = smtp_bench.RelayServer(args.mailrelay, Path(tmp) / "home", smtp_port)
        try:
            server.setup(smtp_bench.BENCH_USER, key, {
                "limits.messages_per_second": smtp_bench.BENCH_RATE_LIMIT + ".0",
                "limits.messages_burst": smtp_bench.BENCH_RATE_LIMIT,
                "smtp.max_connections_per_ip": str(2 * args.concurrency + 10),
                "http.listen": f'"127.0.0.1:{http_port}"'}, None)
            server.start()
            server.wait_ready(60)
            runs = asyncio.run(asyncio.wait_for(run(args, smtp_port, http_port, smtp_bench.BENCH_USER, key),
                                                args.max_seconds))
        finally:
            stopped = server.stop(30)
    summary = {k: statistics.median(r["msgs_per_s"] for r in runs if r["kind"] == k) for k in ("smtp", "http")}
    result = {"runs": runs, "median_msgs_per_s": summary,
              "http_over_smtp": round(summary["http"] / summary["smtp"], 3) if summary["smtp"] else None,
              "server_stop": stopped, "machine": smtp_bench.machine_note(),
              "params": {"messages": args.messages, "concurrency": args.concurrency, "size": args.size,
                         "rounds": args.rounds}}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
