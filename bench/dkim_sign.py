"""DKIM signing cost per message, and what it does to the event loop.

For each algorithm (RSA 2048, ed25519) it measures:

- ``sign_ms``: one :func:`relay.dkim.sign` call (dkimpy, relaxed/relaxed) on a ~3 kB message,
  in this process, median of ``-n`` calls;
- through :class:`relay.delivery.outgoing.Signer` as the delivery stage runs it, ``-n`` messages
  from ``-c`` concurrent callers: ``thread`` (what delivery does under 64 KiB) and
  ``processes_N`` (every message in a pool of ``--processes`` workers, default 2; what delivery
  does from 64 KiB on):
  signatures/s, and the event loop's lag (a 1 ms ticker's extra delay, p50/p99/max) — the time the
  loop could not serve SMTP sessions;
- ``paced``: the same two ways at a steady ``--rate`` signatures/s (what delivery at that many
  msgs/s asks for), the loop's lag then: the cost a node actually pays, where the saturated figures
  above show the ceiling.

``--rsa dkimpy`` measures dkimpy's own pure-Python RSA (the code before ``relay/dkim_openssl.py``)
for comparison; the default ``openssl`` is what the relay runs.

    .venv/bin/python bench/dkim_sign.py -n 300 -c 8 --rate 300
    .venv/bin/python bench/dkim_sign.py -n 300 -c 8 --rate 300 --rsa dkimpy
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime

import dkim as dkimpy

from relay import dkim, dkim_openssl
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


async def _through_signer(message: bytes, key: DkimKey, processes: int, n: int, concurrency: int,
                          rate: float = 0.0) -> dict[str, float]:
    """``concurrency`` callers signing back to back, or (``rate`` > 0) one signature started every
    1/rate s whatever the others are doing."""
    signer = Signer(processes, pool_min_bytes=0)  # processes > 0: every message in the pool
    await signer.sign(message, HEADERS, key)  # warm-up (starts the pool's workers)
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
            await signer.sign(message, HEADERS, key)

    async def paced() -> None:
        start = time.perf_counter()
        pending = []
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            pending.append(asyncio.create_task(signer.sign(message, HEADERS, key)))
        await asyncio.gather(*pending)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    if rate > 0:
        await paced()
    else:
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
    ap.add_argument("--rate", type=float, default=300.0, help="signatures/s of the paced runs (0: none)")
    ap.add_argument("--rsa", choices=["openssl", "dkimpy"], default="openssl",
                    help="who computes the RSA step (dkimpy: its pure-Python code, for comparison)")
    ap.add_argument("--pad-kb", type=int, default=0,
                    help="append this many KiB of body lines (a large message: the pool's case)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    message = MESSAGE + (b"z" * 76 + b"\r\n") * (args.pad_kb * 1024 // 78)
    if args.rsa == "dkimpy":
        # the worker processes import relay.dkim, which installs OpenSSL again: pure Python here only
        dkimpy.RSASSA_PKCS1_v1_5_sign = dkim_openssl.pure_python_sign
        dkimpy.parse_pem_private_key = dkimpy.crypto.parse_pem_private_key
        args.processes = 0
    out: dict[str, object] = {"message_bytes": len(message), "rsa_step": args.rsa}
    for algorithm in DkimAlgorithm:
        private, public = dkim.generate(algorithm)
        key = DkimKey("acme.example", "bench", algorithm, private, public, datetime.now(UTC))
        times = []
        for _ in range(args.n):
            t = time.perf_counter()
            dkim.sign(message, HEADERS, key.domain, key.selector, algorithm, private)
            times.append((time.perf_counter() - t) * 1000)
        figures: dict[str, object] = {
            "sign_ms": round(statistics.median(times), 2),
            "thread": await _through_signer(message, key, 0, args.n, args.c),
        }
        if args.processes > 0:
            figures[f"processes_{args.processes}"] = await _through_signer(
                message, key, args.processes, args.n, args.c)
        if args.rate > 0:
            figures[f"paced_{args.rate:g}_thread"] = await _through_signer(message, key, 0, args.n, 1, args.rate)
            if args.processes > 0:
                figures[f"paced_{args.rate:g}_processes_{args.processes}"] = await _through_signer(
                    message, key, args.processes, args.n, 1, args.rate)
        out[algorithm.value] = figures
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    asyncio.run(main())
