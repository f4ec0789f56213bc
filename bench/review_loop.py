"""What the review loop costs the mail path (README "Classification review").

Prints:
- ``note()``: microseconds per call on the event loop (normalising a ~120-character reply and
  updating the in-memory table), over N calls spread over T distinct texts;
- ``flush()``: the one storage write of a full buffer (T texts, 5 examples each) on SQLite in a
  temporary directory and, with ``--pg-url``, on PostgreSQL (a fresh schema, dropped afterwards).

Run: ``.venv/bin/python bench/review_loop.py [--calls 200000] [--texts 2000] [--pg-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from relay.rules.review import ReviewRecorder
from storage import open_storage


def _word(k: int) -> str:
    """A letters-only word per text (normalisation turns every token with a digit into '#')."""
    return "".join(chr(97 + (k // 26**j) % 26) for j in range(4))


def _reply(i: int, texts: int) -> str:
    return (f"550 5.7.1 <user{i}@example{i % 97}.com>: message {i:08x} refused by zq-gateway rule "
            f"{_word(i % texts)} from [192.0.2.{i % 250}] at 12:{i % 60:02d}:00")


async def _measure(url: str, calls: int, texts: int) -> tuple[float, float]:
    storage = await open_storage(url)
    await storage.migrate()
    try:
        rec = ReviewRecorder(storage.unclassified, interval=3600, max_texts=texts)
        now = datetime.now(UTC)
        replies = [_reply(i, texts) for i in range(calls)]
        t0 = time.perf_counter()
        for i, r in enumerate(replies):
            rec.note("delivery", r, "status-policy", 550, "5.7.1", f"m{i}", f"u{i}@x.example", now)
        per_note_us = (time.perf_counter() - t0) / calls * 1e6
        t0 = time.perf_counter()
        await rec.flush()
        flush_ms = (time.perf_counter() - t0) * 1e3
        await rec.close()
        return per_note_us, flush_ms
    finally:
        await storage.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--pg-url", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        note_us, flush_ms = await _measure(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}", args.calls, args.texts)
    print(f"note(): {note_us:.1f} us per call ({args.calls} calls, {args.texts} distinct texts)")
    print(f"flush(), SQLite: {flush_ms:.0f} ms for {args.texts} texts with 5 examples each (one transaction)")
    if args.pg_url:  # a database of its own, dropped afterwards
        import asyncpg

        name = f"bench_review_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(args.pg_url)
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            base, _, _db = args.pg_url.rpartition("/")
            _, flush_ms = await _measure(f"{base}/{name}", args.calls, args.texts)
            print(f"flush(), PostgreSQL: {flush_ms:.0f} ms for {args.texts} texts with 5 examples each")
        finally:
            await admin.execute(f"DROP DATABASE {name}")
            await admin.close()

if __name__ == "__main__":
    asyncio.run(main())
