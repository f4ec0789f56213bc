"""A delivery stage wired like the server, against a real loopback DNS and real MX servers.

Time is a :class:`FakeClock`; tests call :meth:`DeliveryHarness.step` (one scheduler pass, then
wait for the attempts it started) instead of sleeping.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from policies import default_chain
from relay.config import Config, config_from_dict
from relay.delivery.retry import RetryPolicy
from relay.delivery.scheduler import Scheduler
from relay.delivery.setup import build_scheduler
from relay.ids import new_email_id
from relay.intake import Intake
from relay.spool import Spool
from storage.protocols import Storage
from storage.records import MessageRecord, RecipientOutcome, Status, StatusRecord, SubmissionRecord
from tests.helpers.dns_server import LoopbackDns


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port(host: str = "127.0.0.2") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class DeliveryHarness:
    cfg: Config
    storage: Storage
    spool: Spool
    intake: Intake
    scheduler: Scheduler
    clock: FakeClock
    dns: LoopbackDns
    account_id: int

    async def submit(self, *rcpts: str, body: bytes = b"Subject: hi\r\n\r\nhello\r\n", api_user: str = "app1",
                     sender: str = "app@acme.example") -> str:
        email_id = new_email_id()
        writer = self.spool.new_writer(email_id)
        await writer.write(body)
        msg = MessageRecord(email_id, self.account_id, api_user, sender, "hi", None, None, len(body),
                            datetime.fromtimestamp(self.clock(), UTC), "127.0.0.1", "test")
        record = SubmissionRecord(msg, tuple(RecipientOutcome(r, Status.SENDING) for r in rcpts))
        await self.intake.accept(writer, record)
        await self.intake.flush()  # status rows and the hand-off to delivery follow the 250
        return email_id

    async def step(self, advance: float = 0.0) -> None:
        self.clock.advance(advance)
        await self.scheduler.tick()
        await self.scheduler.drain()

    async def status(self, email_id: str, rcpt: str) -> StatusRecord:
        rows = [r for r in await self.storage.statuses.get_message(email_id) if r.recipient == rcpt.lower()]
        assert rows, f"no status row for {rcpt}"
        return rows[0]

    async def close(self) -> None:
        await self.scheduler.stop(2)
        await self.spool.stop()


async def make_harness(tmp: Path, storage: Storage, dns: LoopbackDns, mx_port: int,
                       settings: dict[str, Any] | None = None, clock: FakeClock | None = None) -> DeliveryHarness:
    data: dict[str, Any] = {
        "delivery": {"dns": [f"{dns.host}:{dns.port}"], "mx_port": mx_port, "dns_timeout": "1s",
                     "command_timeout": "3s", "connect_timeout": "2s", "ehlo_name": "relay.test"},
        "sites": {"pause_initial": "1m"},
    }
    for key, value in (settings or {}).items():
        section, name = key.split(".", 1)
        data.setdefault(section, {})[name] = value
    cfg = config_from_dict(data, home=tmp)
    (tmp / "verp.key").write_text("11" * 32)
    clock = clock or FakeClock()
    spool = Spool(tmp / "spool")
    await spool.start()
    intake = Intake(spool, storage.statuses)
    sched = build_scheduler(cfg, storage, spool, default_chain(storage.suppressions), clock=clock)
    sched.d.retry = RetryPolicy(schedule=[60, 300, 900, 1800, 3600, 7200], then_every=7200, max_age=3 * 86400,
                                jitter=0.0)  # exact retry times in assertions
    intake.on_accepted(sched.enqueue)
    acct = await storage.accounts.ensure_account("acme")
    return DeliveryHarness(cfg, storage, spool, intake, sched, clock, dns, acct.id)
