"""Memory of a delivery backlog: N recipients queued for a site that has paused us.

Builds the real delivery stage (scheduler, sites, dispatchers, client) in-process against a loopback
MX that answers every RCPT with a reputation block (so the site pauses after the first attempt),
enqueues N one-recipient messages the way intake does, lets the scheduler route them, and prints
the resident memory before and after, per queued recipient. Message bodies stay in the spool; only
small per-recipient records are in memory.

    .venv/bin/python bench/delivery_backlog.py -n 100000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.config import config_from_dict
from relay.delivery.admin import QueueAdmin
from relay.delivery.setup import build_scheduler
from relay.ids import new_email_id
from relay.spool import Spool
from storage import open_storage
from storage.records import MessageRecord, RecipientOutcome, Status, SubmissionRecord
from tests.helpers.mx_sink import ScriptedMx


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        mx = ScriptedMx("127.0.0.2", 0, rcpt="421 4.7.0 [TS03] All messages from 127.0.0.1 will be permanently "
                                             "deferred; Retrying will NOT succeed")
        await mx.start()
        cfg = config_from_dict({"delivery": {"relayhost": f"127.0.0.2:{mx.port}", "ehlo_name": "bench.test"}}, home)
        storage = await open_storage(f"sqlite:///{home / 'db.sqlite3'}")
        await storage.migrate()
        spool = Spool(home / "spool", fsync=False)
        await spool.start()
        sched = build_scheduler(cfg, storage, spool, chain=None)
        acct = await storage.accounts.ensure_account("bench")
        now = datetime.now(UTC)

        body = b"Subject: backlog\r\n\r\n" + b"x" * 2000 + b"\r\n"

        async def record(i: int) -> SubmissionRecord:
            msg = MessageRecord(new_email_id(), acct.id, "bench", "app@bench.example", "s", None, None, len(body),
                                now, "127.0.0.1", "bench")
            rec = SubmissionRecord(msg, (RecipientOutcome(f"user{i}@example.com", Status.SENDING),))
            w = spool.new_writer(msg.email_id)
            await w.write(body)
            await spool.commit(w, rec)
            return rec

        # One first message so the site pauses, then the backlog.
        await storage.statuses.record_submissions([first := await record(-1)])
        await sched.enqueue(first)
        await sched.tick()
        await sched.drain()
        gc.collect()
        before = rss_mb()  # an upper bound per recipient: includes building the records and spool files
        records = []
        for start in range(0, n, 500):  # the spool files (bodies on disk, not in memory)
            records += await asyncio.gather(*(record(i) for i in range(start, min(n, start + 500))))
        t0 = time.perf_counter()
        for rec in records:
            await sched.enqueue(rec)
        del records
        await sched.tick()
        await sched.drain()
        elapsed = time.perf_counter() - t0
        gc.collect()
        after = rss_mb()
        view = QueueAdmin(sched).list()[0]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"queued={view.pending} status={view.status} reason={view.pause_reason} "
              f"enqueue_s={elapsed:.1f} rss_before_mb={before:.1f} rss_after_mb={after:.1f} "
              f"bytes_per_recipient={(after - before) * 1024 * 1024 / max(n, 1):.0f} peak_rss_mb={peak:.1f}")
        await sched.stop(1)
        await spool.stop()
        await storage.close()
        await mx.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="recipients queued (default 100000)")
    asyncio.run(main(ap.parse_args().n))
