"""Soak under faults: N messages through a real `mailrelay serve` while it is killed, its database
restarted and its MX flaps. Not part of the test suite (tests/integration/test_faults.py runs a
short version of each fault); prints figures, exits 2 if anything answered 250 was lost.

Set-up (all private, all loopback, all removed afterwards; ``--keep`` keeps the directory):
a PostgreSQL cluster of its own (tests/helpers/pg_cluster.py: initdb as ``postgres``, free port,
fsync off), a scripted MX on 127.0.0.2 as the relay host, a data directory made with
``mailrelay init`` + ``users add`` with retries and pauses shortened to seconds
(``FAST_DELIVERY`` in tests/integration/fault_harness.py), and ``-c`` SMTP clients submitting
one-recipient messages, each tagged with a token in its Message-ID, until ``-n`` were answered 250
and the last fault was measured (a message answered 4xx or cut off is not retried: the next one is
a new message).

Faults, spread evenly over the N messages (fault i fires once i*N/(faults+1) were accepted):
``--kills`` SIGKILLs of serve (restarted at once, as systemd would), ``--pg-restarts`` fast
shutdowns of PostgreSQL (down ``--pg-down`` s), one period of ``--flap-seconds`` in which the
MX is down ``--flap-down`` s / up ``--flap-up`` s in turn, and one disk-full period: the spool
directory is a tmpfs of ``--disk-size`` MiB for the whole run (``[spool] min_free`` set to
``--disk-min-free`` MiB); the MX is held down until the relay's own spool fills the disk and clients
get ``452 4.3.1``, a foreign file takes the rest for ``--disk-hold`` s, the MX comes up while the
disk is still full for ``--disk-hold`` s (delivery must go on), then the foreign file goes (space
returns). Mounting needs root: ``--no-disk-full`` leaves the spool on the data directory's disk and
skips the phase (the output says so).

    .venv/bin/python bench/soak.py -n 15000

Printed: accepted (250), delivered (distinct accepted messages the MX received), lost (250 but
never delivered: must be 0), duplicates (extra deliveries: the window after the MX's 250), and for
each fault two recovery times measured from its end (serve killed — the restart is included —,
PostgreSQL back, the MX back for good, space back): ``first_250_s`` until a client is answered 250
again and ``backlog_s`` until every message answered 250 before was delivered; for the disk-full
period also the 452 count and the deliveries while the disk was full; the 4xx replies by stage and
code, and the time to drain at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.pg_cluster import PrivatePg
from tests.helpers.tmpfs import MiB, fill, free_bytes, mounted_tmpfs, tmpfs_unavailable
from tests.integration.delivery_harness import free_port
from tests.integration.fault_harness import (
    FAST_DELIVERY,
    Load,
    MxFlapper,
    ServeProcess,
    drain_and_verify,
    tally,
)

DISK_FULL_REPLY = "452 4.3.1"  # what a client must get while the disk is full (never 250-then-lost, never 5xx)


@dataclass
class DiskFull:
    """The disk-full period in detail (times in seconds)."""

    fill_s: float  # MX down until the first 452 4.3.1: the relay's own spool filled the disk
    spooled_when_full: int  # messages in the spool at the first 452
    free_bytes_full: int  # free bytes on the spool's disk once the foreign file took the rest
    acked_while_full: int  # 250s from the foreign file taking the rest until the MX came up
    delivered_while_full: int  # deliveries while the MX was up and the foreign file still held the disk
    first_250_after_mx_s: float | None  # MX up (disk still full) until the next 250: space freed by delivery
    replies_452: int = 0  # 452 4.3.1 replies from the MX going down until the first 250 after space returned
    other_4xx: dict[str, int] = field(default_factory=dict)  # any other 4xx in that time (expected: none)


@dataclass
class Fault:
    kind: str  # kill | postgres | flap | disk
    at_s: float  # seconds since the load started
    accepted: int  # messages answered 250 when it fired
    first_250_s: float  # from the fault's end (serve killed, PostgreSQL or the MX back) to the next 250
    backlog_s: float  # from the fault's end until every message answered 250 before it was delivered
    four_xx: int  # 4xx replies from the fault's start to the first 250 after it
    flaps: int = 0  # times the MX went down (flap, disk)
    disk: DiskFull | None = None


def schedule(kills: int, pg_restarts: int, flap: bool, disk: bool) -> list[str]:
    events = ["kill"] * kills
    extra = ["postgres"] * pg_restarts + (["flap"] if flap else []) + (["disk"] if disk else [])
    for i, kind in enumerate(extra):  # spread between the kills
        events.insert(round((i + 1) * len(events) / (len(extra) + 1)) + i, kind)
    return events


async def _backlog_delivered(load: Load, mx: ScriptedMx, since: float, timeout: float = 300) -> float:
    """Seconds from ``since`` until every message answered 250 before now reached the MX."""
    before = set(load.acked)
    while True:
        if not [t for t in tally(load, mx.messages).lost if t in before]:
            return time.monotonic() - since
        assert time.monotonic() - since < timeout, f"backlog not delivered within {timeout} s"
        await asyncio.sleep(0.1)


def _replies_452(temp: Counter[str]) -> int:
    return sum(n for k, n in temp.items() if k.endswith(DISK_FULL_REPLY))


async def _wait_for(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


async def disk_full(args: argparse.Namespace, relay: ServeProcess, mx: ScriptedMx, load: Load,
                    disk: Path) -> tuple[float, DiskFull]:
    """MX down until the relay's own spool fills ``disk`` (452 4.3.1); a foreign file takes the rest;
    the MX comes up with the disk still full; the foreign file goes. Returns when space returned
    (monotonic) and the figures."""
    t0 = time.monotonic()
    before = _replies_452(load.temp)
    foreign = disk / "foreign.bin"
    await mx.stop()  # nothing leaves: the spool grows until the reserve is reached
    try:
        await _wait_for("the relay's own spool filling the disk (452 4.3.1)", lambda: _replies_452(load.temp) > before,
                        180)
        filled = time.monotonic()
        spooled = relay.spool_count()
        await asyncio.to_thread(fill, foreign)
        free_full = free_bytes(disk)
        acks0 = len(load.ack_times)
        await asyncio.sleep(args.disk_hold)
        acked_while_full = len(load.ack_times) - acks0
        delivered0 = len(mx.messages)
        await mx.start()  # the disk is still full: delivery must go on, and free the relay's own space
        mx_up = time.monotonic()
        await asyncio.sleep(args.disk_hold)
        delivered_while_full = len(mx.messages) - delivered0
        after_mx = [t for t in load.ack_times[acks0:] if t > mx_up]
        await asyncio.to_thread(foreign.unlink)  # space returns
        back = time.monotonic()
    finally:
        foreign.unlink(missing_ok=True)
        if not mx.running:
            await mx.start()
    return back, DiskFull(round(filled - t0, 2), spooled, free_full, acked_while_full, delivered_while_full,
                          round(after_mx[0] - mx_up, 2) if after_mx else None)


async def apply(kind: str, args: argparse.Namespace, relay: ServeProcess, pg: PrivatePg, mx: ScriptedMx,
                load: Load, t_start: float, disk: Path | None) -> Fault:
    t0 = time.monotonic()
    accepted, temp0, temp_before = len(load.acked), load.temp_total(), load.temp.copy()
    flaps = 0
    detail: DiskFull | None = None
    if kind == "kill":
        relay.kill()
        back = time.monotonic()
        relay.start()
        await relay.wait_ready(60)
        # clients still read 250s the killed process wrote before it died: only a 250 after the
        # new process is ready is its own
        ready = time.monotonic()
        first_250 = ready - back + await load.next_ack_after(ready, 120)
    elif kind == "postgres":
        await asyncio.to_thread(pg.stop, "fast")
        await asyncio.sleep(args.pg_down)
        await asyncio.to_thread(pg.start)
        back = time.monotonic()
        first_250 = await load.next_ack_after(back, 120)
    elif kind == "disk":
        assert disk is not None
        back, detail = await disk_full(args, relay, mx, load, disk)
        assert relay.proc is not None and relay.proc.poll() is None, f"serve exited on a full disk: {relay.log_tail()}"
        flaps = 1  # the MX went down once
        first_250 = await load.next_ack_after(back, 120)
        seen = load.temp - temp_before  # until the first 250 after space returned
        detail.replies_452 = _replies_452(seen)
        detail.other_4xx = {k: n for k, n in seen.items() if not k.endswith(DISK_FULL_REPLY)}
    else:
        flapper = MxFlapper(mx, down=args.flap_down, up=args.flap_up, duration=args.flap_seconds)
        flapper.start()
        await flapper.wait()
        flaps, back = flapper.flaps, flapper.last_up
        first_250 = await load.next_ack_after(back, 120)
    four_xx = load.temp_total() - temp0
    backlog = await _backlog_delivered(load, mx, back)
    return Fault(kind, round(t0 - t_start, 1), accepted, round(first_250, 2), round(backlog, 2), four_xx, flaps,
                 detail)


async def soak(args: argparse.Namespace, workdir: Path) -> int:
    pg = PrivatePg()
    mx = ScriptedMx("127.0.0.2", free_port("127.0.0.2"))
    relay: ServeProcess | None = None
    load: Load | None = None
    disk: Path | None = None
    mounts = contextlib.ExitStack()  # the spool's tmpfs: unmounted once serve is stopped
    rc = 2
    try:
        await asyncio.to_thread(pg.start)
        url = await asyncio.to_thread(pg.create_database, "mailrelay")
        await mx.start()
        overrides: dict[str, object] = {"limits.messages_per_second": 1_000_000.0, "limits.messages_burst": 1_000_000}
        skip = "--no-disk-full" if args.no_disk_full else tmpfs_unavailable()
        if skip is None:
            overrides["spool.min_free"] = int(args.disk_min_free * MiB)
        relay = ServeProcess.create(workdir / "home", relayhost=f"127.0.0.2:{mx.port}", storage_url=url,
                                    overrides=overrides)
        if skip is None:
            disk = mounts.enter_context(mounted_tmpfs(relay.home / "spool", int(args.disk_size * MiB)))
            print(f"spool on a {args.disk_size:g} MiB tmpfs, [spool] min_free = {args.disk_min_free:g} MiB "
                  "(for the disk-full phase)", flush=True)
        else:
            print(f"disk-full phase skipped ({skip}): the spool stays on the data directory's disk", flush=True)
        relay.start()
        await relay.wait_ready()
        load = Load(relay.smtp_port, clients=args.clients, pace=args.pace)  # stopped below
        t_start = time.monotonic()
        load.start()
        events = schedule(args.kills, args.pg_restarts, args.flap_seconds > 0, disk is not None)
        faults: list[Fault] = []
        for i, kind in enumerate(events):
            while True:
                if len(load.acked) >= (i + 1) * args.messages / (len(events) + 1):
                    break
                await asyncio.sleep(0.05)
            faults.append(await apply(kind, args, relay, pg, mx, load, t_start, disk))
            f = faults[-1]
            print(f"  {f.at_s:7.1f}s {f.kind:8} after {f.accepted:6} accepted: next 250 after {f.first_250_s:5.2f} s, "
                  f"backlog delivered after {f.backlog_s:5.2f} s, {f.four_xx} 4xx", flush=True)
            if f.disk is not None:
                print(f"           {json.dumps(asdict(f.disk))}", flush=True)
        while True:  # the load runs until the last fault was measured and N were accepted
            if len(load.acked) >= args.messages:
                break
            await asyncio.sleep(0.05)
        await load.stop()
        load_s = time.monotonic() - t_start
        connections = int(FAST_DELIVERY["sites.max_connections"])
        # the window after the MX's 250: at most one message per open connection at each kill or MX outage
        bound = (args.kills + sum(f.flaps for f in faults)) * connections
        out = await drain_and_verify(relay, load, mx, max_duplicates=bound, timeout=300)
        t = out.tally
        figures: dict[str, object] = {
            "messages": args.messages, "clients": args.clients, "load_seconds": round(load_s, 1),
            "accepted": t.accepted, "delivered": t.delivered, "lost": len(t.lost), "duplicates": t.duplicates,
            "duplicate_bound": bound, "delivered_without_250": t.unacknowledged_delivered,
            "no_status_row": out.no_status_row, "row_not_delivered": out.not_delivered_row,
            "retried": out.retried, "drain_seconds": round(out.drain_seconds, 1),
            "four_xx": dict(load.temp), "five_xx": len(load.permanent), "cut": dict(load.cut),
            "serve_starts": relay.starts, "faults": [asdict(f) for f in faults],
        }
        for kind in ("kill", "postgres", "flap", "disk"):
            for what in ("first_250_s", "backlog_s"):
                rec = [getattr(f, what) for f in faults if f.kind == kind]
                if rec:
                    mean = sum(rec) / len(rec)
                    figures[f"{kind}_{what}"] = f"min {min(rec)} mean {mean:.2f} max {max(rec)} (n={len(rec)})"
        problems = list(out.problems)
        for f in faults:
            if f.disk is not None:
                figures.update({f"disk_{k}": v for k, v in asdict(f.disk).items()})
                problems += disk_problems(f.disk)
        if disk is None:
            figures["disk"] = f"skipped ({skip})"
        print(json.dumps({k: v for k, v in figures.items() if k != "faults"}, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
        for p in problems:
            print("PROBLEM:", p)
        rc = 2 if problems else 0
        return rc
    finally:
        if load is not None:
            await load.stop()
        if relay is not None:
            relay.ensure_stopped()
            if disk is not None and rc != 0:  # the tmpfs goes with the unmount: keep its spool for a look
                shutil.copytree(disk, workdir / "spool-at-exit", symlinks=True, dirs_exist_ok=True)
        mounts.close()
        await mx.stop()
        await asyncio.to_thread(pg.cleanup)


def disk_problems(d: DiskFull) -> list[str]:
    """What the disk-full period must show: delivery going on while the disk was full, and nothing but
    452 4.3.1 (5xx replies are counted for the whole run)."""
    problems = []
    if d.delivered_while_full == 0:
        problems.append("disk full: nothing was delivered while the disk was full and the MX was up")
    if d.other_4xx:
        problems.append(f"disk full: 4xx replies other than {DISK_FULL_REPLY}: {d.other_4xx}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=10_000)
    ap.add_argument("-c", "--clients", type=int, default=8)
    ap.add_argument("--pace", type=float, default=0.0, help="seconds each client waits between messages")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--pg-restarts", type=int, default=2)
    ap.add_argument("--pg-down", type=float, default=3.0)
    ap.add_argument("--flap-seconds", type=float, default=20.0, help="0: no flapping")
    ap.add_argument("--flap-down", type=float, default=2.0)
    ap.add_argument("--flap-up", type=float, default=2.0)
    ap.add_argument("--disk-size", type=float, default=16.0, help="MiB of the spool's tmpfs (disk-full phase)")
    ap.add_argument("--disk-min-free", type=float, default=2.0, help="MiB: [spool] min_free for the run")
    ap.add_argument("--disk-hold", type=float, default=5.0,
                    help="seconds the disk stays full with the MX down, then again with the MX up")
    ap.add_argument("--no-disk-full", action="store_true",
                    help="skip the disk-full phase (mounting the tmpfs needs root)")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="the whole run, set-up and drain included")
    ap.add_argument("--json", help="write the figures (and every fault) to this file")
    ap.add_argument("--keep", action="store_true", help="keep the data directory (kept anyway after a failure)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mailrelay-soak-"))
    rc = 2
    try:
        rc = asyncio.run(asyncio.wait_for(soak(args, workdir), args.max_seconds))
    except TimeoutError:
        print(f"soak: not finished within --max-seconds {args.max_seconds}", file=sys.stderr)
    except (AssertionError, RuntimeError, subprocess.SubprocessError) as e:
        print(f"soak: {e}", file=sys.stderr)
    finally:
        if rc == 0 and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"data directory kept: {workdir}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
