"""Disk full, for real: the relay's home on a small tmpfs (spool, and the SQLite database with it).

- The relay's own spool fills the disk while the MX is down: new mail gets ``452 4.3.1`` at MAIL
  FROM (SIZE=) and at DATA (a message that would cross the reserve), never 250-then-lost; when the
  MX comes up everything answered 250 is delivered without an operator, and the relay accepts
  again by itself. On SQLite (database on the full disk) and PostgreSQL (spool only).
- A foreign file fills the disk under a message being received: the ENOSPC during spooling
  answers ``452 4.3.1``, leaves no partial file, and the session and the server go on.

Needs root (``mount -t tmpfs``), like the rest of the suite's fault tests; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from storage.records import Status
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.tmpfs import MiB, fill, mounted_tmpfs, tmpfs_unavailable
from tests.integration.conftest import RelayFactory
from tests.integration.delivery_harness import free_port
from tests.integration.relay_fixture import RelayUnderTest, wait_until

BODY = ("x" * 76 + "\r\n") * (256 * 1024 // 78)  # ~256 KiB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs where relay_factory puts its first home (request this fixture first: it is
    unmounted after the relay stopped)."""
    why = tmpfs_unavailable()
    assert why is None, why
    where = tmp_path / "home0"
    where.mkdir()
    with mounted_tmpfs(where, 24 * MiB):
        yield where


def _message(i: int) -> str:
    return f"Subject: fill {i}\r\n\r\n{BODY}"


async def _send(c: aiosmtplib.SMTP, i: int) -> str:
    msg = _message(i)
    _, reply = await c.sendmail("app@acme.example", [f"r{i}@example.com"], msg, mail_options=[f"SIZE={len(msg)}"])
    return reply.rsplit(" ", 1)[1]


def _spooled(relay: RelayUnderTest) -> list[str]:
    assert relay.app.spool is not None
    return list(relay.app.spool.enumerate())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_own_spool_fills_the_disk_then_drains(small_disk: Path, relay_factory: RelayFactory,
                                                    backend: str) -> None:
    mx_port = free_port()  # nothing listens there yet: the MX is down
    relay = await relay_factory({
        "delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{mx_port}", "delivery.ehlo_name": "relay.test",
        "delivery.retry_schedule": ["1s"], "delivery.retry_then_every": "1s", "delivery.connect_timeout": "2s",
        "sites.pause_initial": "1s", "sites.pause_max": "2s", "spool.min_free": 6 * MiB,
    }, backend=backend)
    assert relay.home == small_disk and relay.app.spool is not None
    accepted: list[str] = []
    c = await relay.client()
    refused: aiosmtplib.SMTPSenderRefused | None = None
    for i in range(200):  # 24 MiB / 256 KiB: the reserve is reached well before
        try:
            accepted.append(await _send(c, i))
        except aiosmtplib.SMTPSenderRefused as e:
            refused = e
            break
        except aiosmtplib.SMTPDataError as e:  # passed MAIL FROM, then a new measurement said no
            assert (e.code, e.message) == (452, "4.3.1 Insufficient system storage")
    assert refused is not None, "the reserve was never reached"
    assert (refused.code, refused.message) == (452, "4.3.1 Insufficient system storage")
    assert len(accepted) >= 20
    # without SIZE=, MAIL FROM passes while the free space is still above the reserve itself, and the
    # message is refused at DATA (it would cross the reserve); once the next measurement (SQLite's
    # log grows too) is below the reserve, MAIL FROM already says so. Either way: 452 4.3.1, no 250.
    mail = await c.execute_command(b"MAIL", b"FROM:<app@acme.example>")
    if mail.code == 250:
        await c.rcpt("late@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError) as data_refused:
            await c.data(_message(999))
        assert (data_refused.value.code, data_refused.value.message) == (452, "4.3.1 Insufficient system storage")
    else:
        assert (mail.code, mail.message) == (452, "4.3.1 Insufficient system storage")
    assert sorted(_spooled(relay)) == sorted(accepted)  # every 250 is spooled, nothing else
    assert not list((relay.app.spool.tmp_dir).iterdir())

    async with ScriptedMx("127.0.0.2", mx_port) as mx:  # the MX comes up: the backlog drains by itself

        async def all_delivered() -> bool:
            for email_id in accepted:
                rows = await relay.storage.statuses.get_message(email_id)
                if [r.status for r in rows] != [Status.DELIVERED]:
                    return False
            return True

        await wait_until(all_delivered, timeout=60)
        assert len(mx.messages) == len(accepted) and len({m.rcpt for m in mx.messages}) == len(accepted)
        await wait_until(lambda: not _spooled(relay), timeout=10)
        # ... and new mail is accepted again, without an operator
        email_id = ""
        for _ in range(50):
            try:
                email_id = await _send(c, 1000)
                break
            except aiosmtplib.SMTPSenderRefused as e:
                assert e.code == 452
                await asyncio.sleep(0.2)
        assert email_id, "the relay did not accept mail again after the disk drained"
        await wait_until(lambda: len(mx.messages) == len(accepted) + 1, timeout=20)
    await c.quit()


async def test_message_that_would_cross_the_reserve_is_refused_at_data(small_disk: Path,
                                                                     relay_factory: RelayFactory) -> None:
    """Free space just above the reserve: MAIL FROM (no SIZE=) passes, the 2 MiB message would cross
    it, so DATA answers 452 4.3.1 and nothing is spooled; a small message still fits."""
    st = os.statvfs(small_disk)
    free = st.f_bavail * st.f_frsize
    relay = await relay_factory({"spool.min_free": free - 1 * MiB}, backend="postgres")  # database elsewhere
    assert relay.app.spool is not None
    c = await relay.client()
    mail = await c.execute_command(b"MAIL", b"FROM:<app@acme.example>")
    assert mail.code == 250, mail
    await c.rcpt("big@example.com")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await c.data(f"Subject: big\r\n\r\n{BODY * 8}")
    assert (refused.value.code, refused.value.message) == (452, "4.3.1 Insufficient system storage")
    assert not _spooled(relay) and not list(relay.app.spool.tmp_dir.iterdir())
    _, reply = await c.sendmail("app@acme.example", ["small@example.com"], "Subject: small\r\n\r\nhi\r\n")
    assert reply.startswith("2.0.0 Ok: queued as ")
    await c.quit()


async def test_enospc_while_spooling_answers_452_and_leaves_nothing(small_disk: Path,
                                                                    relay_factory: RelayFactory) -> None:
    relay = await relay_factory({"spool.min_free": 0})  # no reserve: the write itself hits ENOSPC
    assert relay.app.spool is not None
    foreign = small_disk / "foreign.bin"
    fill(foreign, leave=128 * 1024)  # less than the message, more than its headers
    big = f"Subject: big\r\n\r\n{BODY * 4}"  # ~1 MiB
    c = await relay.client()
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await c.sendmail("app@acme.example", ["a@example.com"], big)
    assert (refused.value.code, refused.value.message) == (452, "4.3.1 Insufficient system storage")
    assert not list(relay.app.spool.tmp_dir.iterdir()) and not _spooled(relay)  # no partial file
    code, _ = await c.noop()  # the session goes on
    assert code == 250
    foreign.unlink()  # space returns: the same message is accepted
    _, reply = await c.sendmail("app@acme.example", ["a@example.com"], big)
    assert reply.startswith("2.0.0 Ok: queued as ")
    assert len(_spooled(relay)) == 1
    await c.quit()


async def test_delivery_resumes_when_space_returns(small_disk: Path, relay_factory: RelayFactory) -> None:
    """Worse than the reserve allows for: a foreign file takes every byte while mail waits. The
    outcome writes (SQLite on the same disk) and state writes are retried, nothing crashes or is
    sent twice, and the backlog drains by itself once the space is back."""
    mx_port = free_port()
    relay = await relay_factory({
        "delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{mx_port}", "delivery.ehlo_name": "relay.test",
        "delivery.retry_schedule": ["1s"], "delivery.retry_then_every": "1s", "delivery.connect_timeout": "2s",
        "sites.pause_initial": "1s", "sites.pause_max": "2s", "spool.min_free": 2 * MiB,
    })
    c = await relay.client()
    accepted = [await _send(c, i) for i in range(10)]
    await c.quit()
    foreign = small_disk / "foreign.bin"
    fill(foreign)
    assert os.statvfs(small_disk).f_bavail == 0
    async with ScriptedMx("127.0.0.2", mx_port) as mx:
        await asyncio.sleep(3)  # the MX takes mail, the outcomes cannot be written yet
        assert all(t.done() is False for t in relay.app._tasks if t.get_name() == "scheduler")
        foreign.unlink()

        async def all_delivered() -> bool:
            for email_id in accepted:
                rows = await relay.storage.statuses.get_message(email_id)
                if [r.status for r in rows] != [Status.DELIVERED]:
                    return False
            return True

        await wait_until(all_delivered, timeout=60)
        await wait_until(lambda: not _spooled(relay), timeout=10)
        assert sorted(m.rcpt for m in mx.messages) == sorted(f"r{i}@example.com" for i in range(10))  # once each
