"""Delivery against real peers: a loopback DNS server and scripted aiosmtpd MX servers on 127.0.0.x.

Time is a fake clock: retries and pauses are asserted by advancing it, never by sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from relay.delivery.admin import QueueAdmin
from relay.delivery.state import load_pending
from relay.rules.types import Signal
from storage.errors import StorageError
from storage.protocols import Storage
from storage.records import ListKind, LogKind, Status, SubStatus, SuppressionEntry
from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.delivery_harness import DeliveryHarness, FakeClock, make_harness


@pytest.fixture
async def h(tmp_path: Path, storage: Storage, dns: LoopbackDns, mx_port: int) -> AsyncIterator[DeliveryHarness]:
    harness = await make_harness(tmp_path, storage, dns, mx_port, {"feedback.domains": ["fb.relay.test"]})
    yield harness
    await harness.close()


async def test_delivered_over_one_reused_connection(h: DeliveryHarness, mx: ScriptedMx) -> None:
    ids = [await h.submit(f"user{i}@example.test") for i in range(3)]
    await h.step()
    assert len(mx.messages) == 3 and len(mx.connections) == 1
    for i, email_id in enumerate(ids):
        row = await h.status(email_id, f"user{i}@example.test")
        assert row.status == Status.DELIVERED and row.sub_status is None
        attempt = [e for e in row.log if e.kind is LogKind.ATTEMPT]
        assert len(attempt) == 1 and attempt[0].code == 250 and attempt[0].mx_host == "mx1.example.test"
        assert attempt[0].mx_ip == "127.0.0.2"
    assert all(m.mail_from.endswith("@fb.relay.test") for m in mx.messages)  # signed per-recipient path
    assert len({m.mail_from for m in mx.messages}) == 3
    assert list(h.spool.enumerate()) == []  # delivered messages leave the spool


async def test_user_unknown_is_invalid_and_enters_the_bounce_list(h: DeliveryHarness, mx: ScriptedMx) -> None:
    mx.set(rcpt="550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown")
    email_id = await h.submit("gone@example.test")
    await h.step()
    row = await h.status(email_id, "gone@example.test")
    assert row.status == Status.INVALID and row.sub_status == SubStatus.NOT_EXIST
    assert "5.1.1" in row.reason
    page = await h.storage.suppressions.list(h.account_id, ListKind.BOUNCE, value="gone@example.test")
    assert len(page.items) == 1 and page.items[0].hit_count == 1
    expires = page.items[0].expires_at
    assert expires is not None
    assert abs((expires - page.items[0].created_at) - timedelta(days=30)) < timedelta(seconds=5)


async def test_tencent_bounce_expiry_by_mx_host(tmp_path: Path, storage: Storage, dns: LoopbackDns,
                                                mx_port: int, mx: ScriptedMx) -> None:
    dns.add_mx("vanity.test", [(5, "mx3.qq.com")])
    dns.add_a("mx3.qq.com", "127.0.0.2")
    h = await make_harness(tmp_path, storage, dns, mx_port)
    try:
        mx.set(rcpt="550 Mailbox not found. http://service.mail.qq.com/")
        await h.submit("nobody@vanity.test")
        await h.step()
        entry = (await storage.suppressions.list(h.account_id, ListKind.BOUNCE, value="nobody@vanity.test")).items[0]
        assert entry.expires_at is not None
        assert abs((entry.expires_at - entry.created_at) - timedelta(days=1)) < timedelta(seconds=5)
    finally:
        await h.close()


async def test_temporary_failure_retries_on_schedule(h: DeliveryHarness, mx: ScriptedMx) -> None:
    mx.set(data_reply="451 4.3.0 Temporary local problem")
    email_id = await h.submit("later@example.test")
    await h.step()
    row = await h.status(email_id, "later@example.test")
    assert row.status == Status.SENDING and [e.code for e in row.log if e.kind is LogKind.ATTEMPT] == [451]
    mx.set(data_reply=None)
    await h.step(59)
    assert len(mx.messages) == 0  # not before the first retry time (1 minute)
    await h.step(1)
    assert (await h.status(email_id, "later@example.test")).status == Status.DELIVERED
    assert len(mx.messages) == 1


async def test_retries_stop_at_max_age(h: DeliveryHarness, mx: ScriptedMx) -> None:
    mx.set(rcpt="450 4.2.1 Mailbox busy")
    email_id = await h.submit("busy@example.test")
    await h.step()
    for _ in range(60):
        nxt = h.scheduler.next_due()
        if nxt is None:
            break
        await h.step(max(0.0, nxt - h.clock()))
    row = await h.status(email_id, "busy@example.test")
    assert row.status == Status.INVALID and "retries exhausted" in row.reason and "4.2.1" in row.reason
    attempts = [e for e in row.log if e.kind is LogKind.ATTEMPT]
    assert attempts[-1].at - attempts[0].at <= timedelta(days=3)
    assert len(attempts) > 30


async def test_null_mx_and_nxdomain_are_permanent_servfail_is_not(h: DeliveryHarness, dns: LoopbackDns,
                                                                   mx: ScriptedMx) -> None:
    dns.null_mx("nomail.test")
    dns.nxdomain("nowhere.test")
    dns.servfail("broken.test")
    a = await h.submit("x@nomail.test")
    b = await h.submit("x@nowhere.test")
    c = await h.submit("x@broken.test")
    await h.step()
    for email_id, rcpt in ((a, "x@nomail.test"), (b, "x@nowhere.test")):
        row = await h.status(email_id, rcpt)
        assert row.status == Status.INVALID and row.sub_status == SubStatus.SERVER_ERROR, row
    row = await h.status(c, "x@broken.test")
    assert row.status == Status.SENDING and row.log[-1].kind is LogKind.ATTEMPT
    assert mx.messages == []


async def test_complaint_arriving_while_waiting_stops_the_send(h: DeliveryHarness, mx: ScriptedMx) -> None:
    mx.set(data_reply="451 4.3.0 try again")
    email_id = await h.submit("angry@example.test")
    await h.step()
    await h.storage.suppressions.add([SuppressionEntry(account_id=h.account_id, kind=ListKind.COMPLAINT,
                                                       value="angry@example.test")])
    mx.set(data_reply=None)
    await h.step(60)
    row = await h.status(email_id, "angry@example.test")
    assert row.status == Status.INVALID and row.sub_status == SubStatus.BLACKLIST
    assert row.reason == "Blacklist:complaint (worker:address in complaint list)"
    assert mx.messages == []
    assert row.log[-1].kind is LogKind.POLICY


async def test_reputation_block_pauses_the_queue_until_recover(h: DeliveryHarness, mx: ScriptedMx) -> None:
    mx.set(rcpt="421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or "
                "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes")
    first = await h.submit("a@example.test")
    await h.step()
    admin = QueueAdmin(h.scheduler)
    view = admin.list()[0]
    assert view.status == "paused" and view.pause_reason is not None and "TSS04" in (view.pause_reply or "")
    assert view.next_send_time is not None
    second = await h.submit("b@example.test")
    mx.set(rcpt=None)
    await h.step(5)
    assert mx.messages == []  # paused: nothing is tried
    assert (await h.status(first, "a@example.test")).status == Status.SENDING
    page = await h.storage.suppressions.list(h.account_id, ListKind.BOUNCE)
    assert page.items == []  # a reputation block never touches the bounce list
    admin.recover("app1", "example.test")
    await h.step()
    await h.step(60)  # the first recipient's own retry time
    assert {m.rcpt for m in mx.messages} == {"a@example.test", "b@example.test"}
    assert (await h.status(second, "b@example.test")).status == Status.DELIVERED
    assert admin.list()[0].status in ("idle", "active")


async def test_connection_dropped_in_data_is_retried(h: DeliveryHarness, mx: ScriptedMx) -> None:
    mx.set(drop_at="DOT")
    email_id = await h.submit("drop@example.test")
    await h.step()
    row = await h.status(email_id, "drop@example.test")
    assert row.status == Status.SENDING
    mx.set(drop_at=None)
    await h.step(60)
    assert (await h.status(email_id, "drop@example.test")).status == Status.DELIVERED


async def test_restart_resumes_without_second_delivery(tmp_path: Path, storage: Storage, dns: LoopbackDns,
                                                       mx_port: int, mx: ScriptedMx) -> None:
    clock = FakeClock()
    h = await make_harness(tmp_path, storage, dns, mx_port, clock=clock)
    mx.set(rcpt="451 4.7.1 slow down", rcpt_only={"r2@example.test"})
    email_id = await h.submit("r1@example.test", "r2@example.test")
    await h.step()
    assert [m.rcpt for m in mx.messages] == ["r1@example.test"]
    await h.close()
    pending = list(load_pending(h.spool))
    assert [list(s.items) for s in pending] == [["r2@example.test"]]
    assert pending[0].items["r2@example.test"].attempts == 1

    h2 = await make_harness(tmp_path, storage, dns, mx_port, clock=clock)
    try:
        assert await h2.scheduler.restore() == 1
        mx.set(rcpt=None, rcpt_only=None)
        await h2.step(30)
        assert len(mx.messages) == 1  # not before its saved next attempt time
        await h2.step(30)
        assert sorted(m.rcpt for m in mx.messages) == ["r1@example.test", "r2@example.test"]
        assert (await h2.status(email_id, "r2@example.test")).status == Status.DELIVERED
        assert list(h2.spool.enumerate()) == []
    finally:
        await h2.close()


async def test_domains_sharing_mx_hosts_share_one_site(h: DeliveryHarness, dns: LoopbackDns, mx: ScriptedMx) -> None:
    dns.add_mx("vanity.test", [(10, "mx2.example.test"), (5, "mx1.example.test")])
    await h.submit("a@example.test")
    await h.submit("b@vanity.test")
    await h.submit("c@vanity.test", api_user="app2")
    await h.step()
    assert len(h.scheduler.sites) == 1
    assert sorted(h.scheduler.queues) == [("app1", "example.test"), ("app1", "vanity.test"), ("app2", "vanity.test")]
    assert len(mx.connections) == 1 and len(mx.messages) == 3  # one connection budget, reused


async def test_rate_limit_replies_cut_the_site_rate(h: DeliveryHarness, mx: ScriptedMx) -> None:
    mx.set(hook=lambda stage, arg: "451 4.7.1 Rate limited, too many messages, slow down" if stage == "DOT"
           and len(mx.messages) >= 2 else None)
    for i in range(4):
        await h.submit(f"r{i}@example.test")
    await h.step()
    site = next(iter(h.scheduler.sites.values()))
    assert len(mx.messages) == 2
    rate = site.aimd.rate
    assert rate < 1_000_000.0  # the first push-back turned the unthrottled site into a measured rate
    assert rate >= h.cfg.sites.min_rate
    h.clock.advance(5)
    site.aimd.on_signal(Signal.RATE_LIMIT)
    assert site.aimd.rate <= rate  # multiplicative decrease, never below the floor
    assert site.aimd.rate >= h.cfg.sites.min_rate


async def test_entry_added_while_queue_paused_stops_the_first_attempt(h: DeliveryHarness, mx: ScriptedMx) -> None:
    admin = QueueAdmin(h.scheduler)
    email_id = await h.submit("first@example.test")
    admin_q = h.scheduler.queue_for(next(iter(h.scheduler.messages[email_id].items.values())))
    h.scheduler.pause_queue(admin_q)
    await h.step()
    await h.storage.suppressions.add([SuppressionEntry(account_id=h.account_id, kind=ListKind.BLOCK,
                                                       value="example.test")])
    admin.resume("app1", "example.test")
    await h.step(3)  # older than the RCPT-time check: the lists are read again before the attempt
    row = await h.status(email_id, "first@example.test")
    assert row.status == Status.INVALID and row.reason == "Blacklist: Block:(worker:address in block list)"
    assert mx.messages == []


class _FlakyStatuses:
    """The status repository while the database is away: the first ``failures`` writes fail."""

    def __init__(self, inner: object, failures: int) -> None:
        self._inner = inner
        self.failures = failures
        self.refused = 0

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if name not in ("update_status", "append_log"):
            return attr

        async def flaky(*args: object, **kwargs: object) -> object:
            if self.refused < self.failures:
                self.refused += 1
                raise StorageError("postgres: connection refused")
            return await attr(*args, **kwargs)
        return flaky


async def test_outcome_waits_for_the_database_without_a_second_delivery(h: DeliveryHarness, mx: ScriptedMx,
                                                                        storage: Storage) -> None:
    email_id = await h.submit("user@example.test")
    h.scheduler.record_backoff = (0.01, 0.05)
    flaky = _FlakyStatuses(storage.statuses, failures=4)
    storage.statuses = flaky  # type: ignore[misc]  # the recorder writes through the same storage
    await h.step()
    assert flaky.refused == 4 and len(mx.messages) == 1  # delivered once; the outcome waited, then landed
    storage.statuses = flaky._inner  # type: ignore[misc,assignment]
    row = await h.status(email_id, "user@example.test")
    assert row.status == Status.DELIVERED
    assert list(h.spool.enumerate()) == []  # removed only once the outcome was written
    await h.step(advance=3600)
    assert len(mx.messages) == 1
