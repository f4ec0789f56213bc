"""Faults under load, shortened (``bench/soak.py`` is the long run): a real `mailrelay serve`
delivers through a relay host (a scripted MX) while SMTP clients submit concurrently.

After every run, once the relay drained: every message answered 250 reached the MX and has a
DELIVERED status row; a message is delivered twice only in the documented window (the MX answered
250 to the final dot, the relay died or lost the connection before recording it), so duplicates
stay within faults × connections; a transient fault is never answered 5xx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.pg_cluster import PrivatePg
from tests.integration.delivery_harness import free_port
from tests.integration.fault_harness import FAST_DELIVERY, Load, MxFlapper, ServeProcess, drain_and_verify

pytestmark = pytest.mark.slow

CONNECTIONS = int(FAST_DELIVERY["sites.max_connections"])


@pytest.fixture
async def mx() -> AsyncIterator[ScriptedMx]:
    async with ScriptedMx("127.0.0.2", free_port("127.0.0.2")) as m:
        yield m


async def test_kill_dash_nine_under_load_three_times(tmp_path: Path, mx: ScriptedMx) -> None:
    relay = ServeProcess.create(tmp_path / "home", relayhost=f"127.0.0.2:{mx.port}")
    load = Load(relay.smtp_port, clients=6, pace=0.01)
    kills = 3
    try:
        relay.start()
        await relay.wait_ready()
        load.start()
        restarts: list[float] = []
        for _ in range(kills):
            await asyncio.sleep(2.0)  # submissions and deliveries in flight
            relay.kill()
            killed_at = time.monotonic()
            relay.start()
            await relay.wait_ready()
            ready_at = time.monotonic()  # 250s read before this may come from the killed process
            restarts.append(ready_at - killed_at + await load.next_ack_after(ready_at, 30))
        await asyncio.sleep(1.0)
        await load.stop()
        out = await drain_and_verify(relay, load, mx, max_duplicates=kills * CONNECTIONS)
    finally:
        await load.stop()
        relay.ensure_stopped()
    print(f"kill -9 x{kills}: {out.line()} first 250 after each kill: {[round(s, 1) for s in restarts]} s "
          f"cut={dict(load.cut)} 4xx={dict(load.temp)}")
    assert not out.problems, "\n".join(out.problems)
    assert out.tally.accepted > 100, f"too little load to prove anything: {out.line()}"
    assert len(mx.messages) >= out.tally.accepted


async def test_postgresql_restarted_twice_under_load(tmp_path: Path, mx: ScriptedMx) -> None:
    pg = PrivatePg()
    try:
        await asyncio.to_thread(pg.start)
        url = await asyncio.to_thread(pg.create_database, "mailrelay")
        relay = ServeProcess.create(tmp_path / "home", relayhost=f"127.0.0.2:{mx.port}", storage_url=url)
        load = Load(relay.smtp_port, clients=6, pace=0.01)
        try:
            relay.start()
            await relay.wait_ready()
            load.start()
            await asyncio.sleep(1.5)
            recoveries: list[float] = []
            for _ in range(2):
                temp_before, acked_before = load.temp_total(), len(load.acked)
                await asyncio.to_thread(pg.stop, "fast")
                await asyncio.sleep(3.0)  # the outage
                assert load.temp_total() > temp_before, "no 4xx while the database was down"
                assert len(load.acked) - acked_before < 60, "mail kept being accepted without a database"
                await asyncio.to_thread(pg.start)
                recoveries.append(await load.next_ack_after(time.monotonic(), 30))
                await asyncio.sleep(1.5)
            await load.stop()
            assert relay.proc is not None and relay.proc.poll() is None, "the relay died with its database"
            assert relay.starts == 1
            out = await drain_and_verify(relay, load, mx, max_duplicates=0)
        finally:
            await load.stop()
            relay.ensure_stopped()
    finally:
        await asyncio.to_thread(pg.cleanup)
    print(f"PostgreSQL restarted x2: {out.line()} first 250 after each restart: "
          f"{[round(s, 1) for s in recoveries]} s 4xx={dict(load.temp)} cut={dict(load.cut)}")
    assert not out.problems, "\n".join(out.problems)
    assert out.tally.accepted > 100, out.line()


async def test_mx_flapping_delivers_everything_once_it_stays_up(tmp_path: Path, mx: ScriptedMx) -> None:
    relay = ServeProcess.create(tmp_path / "home", relayhost=f"127.0.0.2:{mx.port}")
    load = Load(relay.smtp_port, clients=4, pace=0.02)
    flapper = MxFlapper(mx, down=1.0, up=1.5, duration=15.0)
    try:
        relay.start()
        await relay.wait_ready()
        load.start()
        flapper.start()
        await flapper.wait()
        await load.stop()
        out = await drain_and_verify(relay, load, mx, max_duplicates=flapper.flaps * CONNECTIONS)
    finally:
        await load.stop()
        relay.ensure_stopped()
    print(f"MX flapping x{flapper.flaps}: {out.line()} 4xx={dict(load.temp)} cut={dict(load.cut)}")
    assert not out.problems, "\n".join(out.problems)
    assert out.tally.accepted > 100, out.line()
    assert flapper.flaps >= 5
    assert out.retried > 0, "no delivery ever failed: the MX was never seen down"
    assert not load.temp and not load.cut, "the relay's clients must not notice the MX flapping"
