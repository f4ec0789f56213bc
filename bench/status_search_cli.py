"""`mailrelay status search --limit N` at N = 4k, 12k, 40k records: seconds per run (see bench/README.md).

For each size: a fresh home (`mailrelay init --no-delivery`, SQLite, or ``--storage-url`` for
an empty PostgreSQL database), N recipient records of one account written through
the storage API (one message per recipient, each with two send-log lines, like a deferral then a
delivery), then the CLI run as an operator runs it, output to /dev/null, timed end to end (process
start included). Prints one line per size; ``--json FILE`` writes them too.

    .venv/bin/python bench/status_search_cli.py                       # SQLite, 4000 12000 40000
    .venv/bin/python bench/status_search_cli.py --sizes 12000 --storage-url postgresql://postgres@127.0.0.1:5432/EMPTY_DB
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage import open_storage  # noqa: E402
from storage.protocols import Storage  # noqa: E402
from storage.records import LogEntry, LogKind, MessageRecord, RecipientOutcome, Status, SubmissionRecord  # noqa: E402

MAILRELAY = str(Path(sys.executable).parent / "mailrelay")


async def log_two(storage: Storage, start: datetime, i: int) -> None:
    """Two attempts (a deferral, then the delivery): the page has to carry its send logs."""
    at = start + timedelta(milliseconds=i, seconds=1)
    await storage.statuses.append_log(f"B{i:09d}", f"r{i}@example.com",
                                      LogEntry(at, LogKind.ATTEMPT, "451 4.7.1 later", 451, "4.7.1"))
    await storage.statuses.append_log(f"B{i:09d}", f"r{i}@example.com",
                                      LogEntry(at + timedelta(seconds=1), LogKind.ATTEMPT, "250 ok", 250))


async def fill(url: str, n: int) -> None:
    storage = await open_storage(url)
    try:
        acct = await storage.accounts.ensure_account("bench")
        start = datetime.now(UTC) - timedelta(hours=1)
        batch: list[SubmissionRecord] = []
        for i in range(n):
            m = MessageRecord(f"B{i:09d}", acct.id, "bench", "app@bench.example", f"s{i}", None, None, 1000,
                              start + timedelta(milliseconds=i), "127.0.0.1")
            batch.append(SubmissionRecord(m, (RecipientOutcome(f"r{i}@example.com", Status.SENDING),)))
            if len(batch) == 1000 or i == n - 1:
                await storage.statuses.record_submissions(batch)
                batch.clear()
        for first in range(0, n, 500):  # two attempts each; concurrent calls share group commits
            await asyncio.gather(*(log_two(storage, start, i) for i in range(first, min(first + 500, n))))
    finally:
        await storage.close()


def run(sizes: list[int], storage_url: str | None) -> list[dict[str, float]]:
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="mr-bench-search-") as tmp:
            home = Path(tmp) / "home"
            init = [MAILRELAY, "init", "--home", str(home), "--no-delivery"]
            if storage_url:
                init += ["--storage-url", storage_url]
            subprocess.run(init, check=True, capture_output=True)
            url = storage_url or f"sqlite://{home / 'mailrelay.sqlite3'}"
            t0 = time.monotonic()
            asyncio.run(fill(url, n))
            fill_s = time.monotonic() - t0
            t0 = time.monotonic()
            done = subprocess.run([MAILRELAY, "status", "search", "--home", str(home), "--account", "bench",
                                   "--limit", str(n), "--json"], check=True, stdout=subprocess.PIPE)
            secs = time.monotonic() - t0
            lines = done.stdout.count(b"\n")
            assert lines == n, f"expected {n} records, got {lines}"
            row = {"records": n, "search_s": round(secs, 2), "fill_s": round(fill_s, 1)}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 12000, 40000])
    ap.add_argument("--storage-url", help="an EMPTY PostgreSQL database (one size per run); default SQLite in the home")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = run(args.sizes, args.storage_url)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
