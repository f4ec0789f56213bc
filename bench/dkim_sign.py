"""DKIM signing cost per message, and what it does to the event loop.

For each algorithm (RSA 2048, ed25519) it measures:

- ``sign_ms``: one :func:`relay.dkim.sign` call (dkimpy, relaxed/relaxed) on a ~3 kB message,
  in this process, median of ``-n`` calls;
- through :class:`relay.delivery.outgoing.Signer` as the delivery stage runs it, ``-n`` messages
  from ``-c`` concurrent callers: ``thread`` (``delivery.dkim_processes = 0``) and ``configured``
  (``--processes`` workers, default 2: RSA in the process pool, ed25519 still in a thread):
  signatures/s, and the event loop's lag (a 1 ms ticker's extra delay, p50/p99/max) — the time the
  loop could not serve SMTP sessions.

    .venv/bin/python bench/dkim_sign.py -n 200 -c 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime

from relay import dkim
from relay.delivery.outgoing import Signer
from storage.records import DkimAlgorithm, DkimKey

HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
           "Content-Transfer-Encoding", "Feedback-ID"]
MESSAGE = (
    b"From: App <app@acme.example>\r\nTo: someone@example.com\r\nSubject: Your order\r\n"
    b"Date: Thu, 03 Dec 2026 09:00:00 +0000\r\nMessage-ID: <m1@acme.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n"
    b"Feedback-ID: default:app1:acme:mailrelay\r\n\r\n" + b"Hello, your order ships today. " * 2 + b"\r\n"
) + b"x" * 76 + b"\r\n" * 1 + (b"y" * 76 + b"\r\n") * 35


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))] if s else 0.0


async def _through_signer(key: DkimKey, processes: int, n: int, concurrency: int) -> dict[str, float]:
    signer = Signer(processes)
    await signer.sign(MESSAGE, HEADERS, key)  # warm-up (starts the pool's workers)
    lags: list[float] = []
    done = False

    async def ticker() -> None:
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(max(0.0, time.perf_counter() - t - 0.001) * 1000)

    queue = list(range(n))

    async def worker() -> None:
        while queue:
            queue.pop()
            await signer.sign(MESSAGE, HEADERS, key)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    done = True
    await tick
    await signer.close()
    return {"sigs_per_s": round(n / wall, 1), "lag_p50_ms": round(_pct(lags, 0.5), 2),
            "lag_p99_ms": round(_pct(lags, 0.99), 2), "lag_max_ms": round(max(lags, default=0.0), 2)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="signatures per measurement")
    ap.add_argument("-c", type=int, default=8, help="concurrent callers (dispatchers)")
    ap.add_argument("--processes", type=int, default=2, help="pool size (delivery.dkim_processes)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    out: dict[str, object] = {"message_bytes": len(MESSAGE)}
    for algorithm in DkimAlgorithm:
        private, public = dkim.generate(algorithm)
        key = DkimKey("acme.example", "bench", algorithm, private, public, datetime.now(UTC))
        times = []
        for _ in range(args.n):
            t = time.perf_counter()
            dkim.sign(MESSAGE, HEADERS, key.domain, key.selector, algorithm, private)
            times.append((time.perf_counter() - t) * 1000)
        out[algorithm.value] = {
            "sign_ms": round(statistics.median(times), 2),
            "thread": await _through_signer(key, 0, args.n, args.c),
            "configured": await _through_signer(key, args.processes, args.n, args.c),
        }
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    asyncio.run(main())
