"""Event webhooks: how fast events go through the outbox, and what webhooks cost SMTP intake.
Not part of the test suite; prints figures (``--json FILE`` writes them too).

1. Outbox throughput (in process): ``-e`` recipients of one account with a webhook (all events)
   are set delivered, one status update each (the trigger writes one outbox row per update: the
   time is ``fill_s``), then a :class:`WebhookSender` (the one `serve` runs) sends them to a
   loopback aiohttp endpoint that verifies every signature, until the outbox is empty:
   ``events_per_s``, once per ``--batch`` value (1: EngageLab's one event per POST).

2. Cost to SMTP intake (real processes): a `mailrelay serve` delivering to a loopback MX
   (tests/helpers/mx_sink.py) gets ``-n`` one-recipient messages from ``-c`` SMTP clients
   (tests/integration/fault_harness.py ``Load``), with no webhook ("off") and with a webhook that
   wants every event, its endpoint on loopback ("on"): every delivery then writes an outbox row in
   its status update and the sender POSTs it while intake goes on. Off and on alternate in one
   invocation (``--rounds`` each, fresh data directory each); printed: accepted msgs/s of each
   round, the medians and on/off; for "on" also the seconds until every event was acknowledged.

    .venv/bin/python bench/webhooks.py                      # SQLite
    .venv/bin/python bench/webhooks.py --pg-admin-url postgresql://postgres@127.0.0.1:5432/test
      (PostgreSQL: every part runs on a database of its own, created and dropped through that URL;
       the admin database itself is never written)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from relay.webhooks.sender import SenderSettings, WebhookSender
from storage import SqlStorage, open_storage
from storage.records import LogEntry, LogKind, MessageRecord, RecipientOutcome, Status, SubmissionRecord
from storage.webhooks import DEFAULT_EVENTS
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.webhook_receiver import Receiver
from tests.integration.delivery_harness import free_port
from tests.integration.fault_harness import Load, ServeProcess
from tests.integration.relay_fixture import wait_until

SECRET = "bench-secret-0123456789abcdef"


async def _fresh_pg(admin_url: str) -> tuple[str, str]:
    name = f"mailrelay_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}", name


async def _drop_pg(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _database(pg_admin_url: str | None, sqlite_path: Path | None) -> AsyncIterator[str | None]:
    """A fresh PostgreSQL database (dropped afterwards) when ``pg_admin_url`` is given, else
    ``sqlite_path``'s URL (None: `mailrelay init`'s own SQLite, for the intake rounds)."""
    if not pg_admin_url:
        yield f"sqlite://{sqlite_path}" if sqlite_path else None
        return
    url, name = await _fresh_pg(pg_admin_url)
    try:
        yield url
    finally:
        await _drop_pg(pg_admin_url, name)


async def throughput(url: str, events: int, batch: int, concurrency: int) -> dict[str, Any]:
    receiver = Receiver()
    await receiver.start()
    st: SqlStorage = await open_storage(url)
    task: asyncio.Task[None] | None = None
    try:
        await st.migrate()
        acct = await st.accounts.ensure_account(f"bench-{uuid.uuid4().hex[:6]}")
        hook = await st.webhooks.add(acct.id, receiver.url, DEFAULT_EVENTS, SECRET, batch, datetime.now(UTC))
        receiver.secrets[hook.id] = SECRET
        email_id = f"B{uuid.uuid4().hex[:12].upper()}"
        now = datetime.now(UTC)
        rcpts = [f"r{i}@example.com" for i in range(events)]
        msg = MessageRecord(email_id=email_id, account_id=acct.id, api_user="bench", sender="b@shop.example",
                            subject="bench", label=None, email_type=None, size=1, request_time=now,
                            request_ip="192.0.2.1", node="bench")
        await st.statuses.record_submissions([SubmissionRecord(msg, tuple(RecipientOutcome(r, Status.SENDING)
                                                                          for r in rcpts))])
        t0 = time.perf_counter()

        async def deliver(part: list[str]) -> None:
            for r in part:
                await st.statuses.update_status(email_id, r, Status.DELIVERED, None, "250 ok",
                                                LogEntry(at=now, kind=LogKind.ATTEMPT, text="250 ok", code=250))

        await asyncio.gather(*(deliver(rcpts[i::16]) for i in range(16)))  # group-committed, as delivery does
        fill_s = time.perf_counter() - t0
        settings = SenderSettings(timeout=10, concurrency=concurrency, retry_initial=0.1, retry_max=1, poll=0.01,
                                  allow_private=True)  # the receiver is on loopback
        sender = WebhookSender(st, "bench", settings)
        t1 = time.perf_counter()
        task = asyncio.create_task(sender.run())

        async def drained() -> bool:
            return await st.webhooks.outbox_size() == 0

        await wait_until(drained, 600)
        send_s = time.perf_counter() - t1
        assert receiver.bad_signatures == 0 and len(set(receiver.ids())) == events
        return {"events": events, "batch": batch, "concurrency": concurrency, "fill_s": round(fill_s, 2),
                "fill_updates_per_s": round(events / fill_s), "send_s": round(send_s, 2),
                "events_per_s": round(events / send_s), "posts": receiver.posts,
                "resent": len(receiver.ids()) - events}
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await st.close()
        await receiver.stop()


async def intake_round(work: Path, webhooks_on: bool, messages: int, clients: int,
                       storage_url: str | None) -> dict[str, Any]:
    home = work / f"home-{uuid.uuid4().hex[:6]}"
    receiver = Receiver()
    await receiver.start()
    async with ScriptedMx("127.0.0.2", free_port("127.0.0.2")) as mx:
        relay = ServeProcess.create(home, relayhost=f"127.0.0.2:{mx.port}", storage_url=storage_url,
                                    overrides={"limits.messages_per_second": 1_000_000,
                                               "limits.messages_burst": 1_000_000,
                                               "webhooks.poll": "100ms"})
        if webhooks_on:
            out = relay.cli("webhooks", "add", "--account", "acme", receiver.url, "--secret", SECRET)
            receiver.secrets[int(out.splitlines()[1][4:])] = SECRET
        load = Load(relay.smtp_port, clients=clients, limit=messages)
        try:
            relay.start()
            await relay.wait_ready()
            t0 = time.perf_counter()
            load.start()
            await load.finished(600)
            intake_s = time.perf_counter() - t0
            events_s = None
            if webhooks_on:
                expected = {f"{t}@example.com" for t in load.acked}
                await wait_until(lambda: expected <= {e["to"] for e in receiver.events}, 300)
                events_s = round(time.perf_counter() - t0, 2)
        finally:
            await load.stop()
            relay.ensure_stopped()
            await receiver.stop()
    return {"webhooks": "on" if webhooks_on else "off", "accepted": len(load.acked),
            "accept_mps": round(len(load.acked) / intake_s, 1), "all_events_acknowledged_s": events_s,
            "events_received": len(set(receiver.ids())), "bad_signatures": receiver.bad_signatures}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-e", "--events", type=int, default=5000, help="events for the throughput part (5000)")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes to measure (default: 1 and 10)")
    ap.add_argument("--concurrency", type=int, default=4, help="POSTs in flight per endpoint (4)")
    ap.add_argument("-n", "--messages", type=int, default=2000, help="messages per intake round (2000)")
    ap.add_argument("-c", "--clients", type=int, default=8, help="SMTP clients in the intake rounds (8)")
    ap.add_argument("--rounds", type=int, default=2, help="intake rounds each of off and on, alternating (2)")
    ap.add_argument("--pg-admin-url", help="run on PostgreSQL: a fresh database per part and round, created "
                                           "(and dropped) through this URL (default: temporary SQLite files)")
    ap.add_argument("--skip-intake", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    out: dict[str, Any] = {"throughput": [], "intake": []}
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        work = Path(tmp)
        for batch in args.batch or [1, 10]:
            async with _database(args.pg_admin_url, work / f"tp-{batch}.sqlite3") as url:
                assert url is not None
                r = await throughput(url, args.events, batch, args.concurrency)
            out["throughput"].append(r)
            print(f"outbox → endpoint, batch {batch}: {r['events_per_s']} events/s "
                  f"({r['events']} events in {r['send_s']} s, {r['posts']} POSTs, {r['resent']} resent); "
                  f"filling the outbox through {r['events']} status updates: {r['fill_updates_per_s']} updates/s")
        if not args.skip_intake:
            for i in range(args.rounds * 2):
                on = i % 2 == 1
                async with _database(args.pg_admin_url, None) as url:
                    r = await intake_round(work, on, args.messages, args.clients, url)
                out["intake"].append(r)
                print(f"intake round {i + 1}, webhooks {r['webhooks']}: {r['accept_mps']} msgs/s accepted "
                      f"({r['accepted']} messages)"
                      + (f"; every delivered event acknowledged {r['all_events_acknowledged_s']} s after the start"
                         if on else ""))
            off = statistics.median(r["accept_mps"] for r in out["intake"] if r["webhooks"] == "off")
            on_ = statistics.median(r["accept_mps"] for r in out["intake"] if r["webhooks"] == "on")
            out["intake_ratio_on_off"] = round(on_ / off, 3)
            print(f"intake with webhooks on / off (medians): {on_:.1f} / {off:.1f} msgs/s = {on_ / off:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
