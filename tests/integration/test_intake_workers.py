"""SMTP sessions in intake worker processes (``[intake] workers``, relay/workers): real processes
on the listening sockets the server bound, one queue, one budget per node.

The App runs in the test's loop (so its queue, rows and counters can be looked at); its workers
are real child processes started the way `mailrelay serve` starts them.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import ssl
from datetime import timedelta

import aiohttp
import aiosmtplib
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from relay.tls import write_self_signed
from storage import open_storage
from storage.records import ListKind, Status, StatusFilter, SuppressionEntry, utcnow
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest, wait_until

MSG = b"From: app@acme.example\r\nTo: someone@example.com\r\nSubject: Hello workers\r\n\r\nHi!\r\n"


def _workers(relay: RelayUnderTest) -> list[int]:
    assert relay.app.intake_workers is not None
    return [w.proc.pid for w in relay.app.intake_workers.workers.values() if w.proc.returncode is None]


def _queued(relay: RelayUnderTest) -> set[str]:
    assert relay.app.spool is not None
    return set(relay.app.spool.enumerate())


def _staged(relay: RelayUnderTest) -> list[str]:
    assert relay.app.spool is not None
    return sorted(p.name for p in relay.app.spool.tmp_dir.iterdir())


async def _one_message(relay: RelayUnderTest, rcpts: list[str]) -> tuple[list[int], int, str]:
    c = await relay.client()
    try:
        await c.mail("app@acme.example")
        codes = [(await c.execute_command(b"RCPT", f"TO:<{r}>".encode())).code for r in rcpts]
        if 250 not in codes:
            await c.rset()
            return codes, 0, ""
        d = await c.data(MSG)
        return codes, d.code, d.message
    finally:
        await c.quit()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sessions_in_workers_reach_the_owners_queue_rows_and_counters(
        relay_factory: RelayFactory, backend: str) -> None:
    relay = await relay_factory({"intake.workers": 2}, backend=backend)
    pids = _workers(relay)
    assert len(pids) == 2 and os.getpid() not in pids
    assert not relay.app.listeners  # no SMTP session runs in the owner
    now = utcnow()
    await relay.storage.suppressions.add([SuppressionEntry(
        account_id=relay.account_id, kind=ListKind.UNSUBSCRIBE, value="gone@example.com", created_at=now,
        reason_code=0)])
    results = await asyncio.gather(*(
        _one_message(relay, [f"r{i}@example.com", "gone@example.com"]) for i in range(16)))
    ids = set()
    for codes, code, text in results:
        assert codes == [250, 550] and code == 250 and text.startswith("2.0.0 Ok: queued as "), (codes, code, text)
        ids.add(text.rsplit(" ", 1)[1])
    assert len(ids) == 16 and _queued(relay) == ids  # every 250 is in the owner's queue
    # nothing left half-way: the tmp/ links of adopted messages go in the background, soon
    await wait_until(lambda: _staged(relay) == [], timeout=5)
    # A transaction whose only recipient was refused: recorded through the owner too.
    codes, code, _ = await _one_message(relay, ["gone@example.com"])
    assert codes == [550] and code == 0
    assert relay.app.intake is not None

    async def rows_written() -> bool:
        page = await relay.storage.statuses.search(StatusFilter(account_id=relay.account_id), limit=100)
        return len(page.items) == 16 + 17

    await wait_until(rows_written)
    page = await relay.storage.statuses.search(StatusFilter(account_id=relay.account_id), limit=100)
    by_status: dict[Status, int] = {}
    for row in page.items:
        by_status[row.status] = by_status.get(row.status, 0) + 1
        assert row.request_ip == "127.0.0.1" and row.api_user == "app1"
        if row.status is Status.SENDING:
            assert row.email_id in ids and row.subject == "Hello workers"
    assert by_status == {Status.SENDING: 16, Status.INVALID: 17}
    metrics = (await relay.app.metrics.render()).decode()
    assert 'mailrelay_messages_accepted_total{api_user="app1"} 16.0' in metrics
    assert "mailrelay_smtp_transaction_seconds_count 16.0" in metrics


async def test_the_rate_budget_is_one_per_node(relay_factory: RelayFactory) -> None:
    relay = await relay_factory({"intake.workers": 2, "limits.messages_per_second": 0.001,
                                 "limits.messages_burst": 3})
    replies = []
    for _ in range(6):  # new connections: the kernel hands them to either worker
        c = await relay.client()
        r = await c.execute_command(b"MAIL", b"FROM:<app@acme.example>")
        replies.append((r.code, r.message))
        await c.quit()
    assert [code for code, _ in replies] == [250, 250, 250, 451, 451, 451]
    assert replies[-1][1] == "4.7.1 Message rate limit exceeded for this API_USER, try again later"


async def test_auth_failures_are_counted_across_workers(relay_factory: RelayFactory) -> None:
    relay = await relay_factory({"intake.workers": 2, "limits.auth_failures_per_ip": 3})
    async def auth_plain(key: str) -> tuple[int, str]:
        c = await relay.client(login=False)
        token = base64.b64encode(f"\0{relay.api_user}\0{key}".encode())
        r = await c.execute_command(b"AUTH", b"PLAIN", token)
        c.close()
        return r.code, r.message

    for _ in range(3):  # one failure per connection, on new connections spread over the workers
        assert (await auth_plain("wrong-key"))[0] == 535
    for _ in range(2):  # blocked in whichever worker the connection lands: even the right key
        code, text = await auth_plain(relay.key)
        assert code == 421 and "Too many authentication failures from your address" in text


async def test_http_api_failures_block_smtp_auth_in_the_workers(relay_factory: RelayFactory) -> None:
    """One failure window per node: failed HTTP logins (in the owner) block AUTH in every worker,
    and a worker started later gets the block too."""
    relay = await relay_factory({"intake.workers": 2, "limits.auth_failures_per_ip": 2,
                                 "http.listen": "127.0.0.1:0"})
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    basic = base64.b64encode(f"{relay.api_user}:wrong-key".encode()).decode()
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.get(f"http://{host}:{port}/v1/messages/NOSUCHID",
                             headers={"Authorization": f"Basic {basic}"}) as r:
                assert r.status == 401

    async def auth_code() -> int:
        c = await relay.client(login=False)
        token = base64.b64encode(f"\0{relay.api_user}\0{relay.key}".encode())
        r = await c.execute_command(b"AUTH", b"PLAIN", token)
        c.close()
        return r.code

    assert [await auth_code() for _ in range(4)] == [421] * 4
    old = _workers(relay)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: len(_workers(relay)) == 2 and not set(_workers(relay)) & set(old), timeout=20)
    assert [await auth_code() for _ in range(4)] == [421] * 4  # the new workers' starting copy


async def test_connections_per_ip_are_counted_across_workers(relay_factory: RelayFactory) -> None:
    relay = await relay_factory({"intake.workers": 2, "smtp.max_connections_per_ip": 2})
    first, second = await relay.client(login=False), await relay.client(login=False)
    third = aiosmtplib.SMTP(hostname=relay.host, port=relay.port, timeout=10, start_tls=False)
    with pytest.raises(aiosmtplib.SMTPConnectError) as e:
        await third.connect()
    assert "421" in str(e.value) and "Too many connections from your address" in str(e.value)
    await first.quit()

    async def admitted() -> bool:
        c = aiosmtplib.SMTP(hostname=relay.host, port=relay.port, timeout=10, start_tls=False)
        try:
            await c.connect()
        except aiosmtplib.SMTPConnectError:
            return False
        await c.quit()
        return True

    await wait_until(admitted)
    await second.quit()


async def test_a_killed_worker_is_replaced_and_what_it_held_is_released(relay_factory: RelayFactory) -> None:
    relay = await relay_factory({"intake.workers": 2, "smtp.max_connections_per_ip": 2})
    held = [await relay.client(login=False), await relay.client(login=False)]  # the node's limit is reached
    old = _workers(relay)
    assert relay.app.spool is not None
    # What a worker staged (linked into queue/) but never handed over (it died before the 250):
    # the owner removes it, from queue/ too.
    leftover = relay.app.spool.tmp_dir / f"01M8Y54DKBAZVGPBBR7Y28R864.w{old[0]}.part"
    leftover.write_bytes(b"a message never answered 250")
    os.link(leftover, relay.app.spool.path_of("01M8Y54DKBAZVGPBBR7Y28R864"))
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: len(_workers(relay)) == 2 and not set(_workers(relay)) & set(old), timeout=20)
    assert relay.app.intake_workers is not None and relay.app.intake_workers.restarts == 2
    assert not leftover.exists() and not relay.app.spool.path_of("01M8Y54DKBAZVGPBBR7Y28R864").exists()
    for c in held:
        c.close()
    codes, code, text = await _one_message(relay, ["after@example.com"])  # counts released, mail flows
    assert codes == [250] and code == 250
    assert text.rsplit(" ", 1)[1] in _queued(relay)


async def test_every_message_answered_250_stays_queued_when_its_worker_is_killed_under_load(
    relay_factory: RelayFactory,
) -> None:
    """Workers link what they stage into queue/ themselves; a killed worker's purge must remove
    only what the owner never adopted. Sessions keep sending while the worker is killed twice:
    every email_id answered 250 is still queued afterwards, with its status row."""
    relay = await relay_factory({"intake.workers": 1})
    acked: list[str] = []
    stop = asyncio.Event()

    async def sender(n: int) -> None:
        while not stop.is_set():
            try:
                c = await relay.client()
                try:
                    for i in range(20):
                        await c.mail("app@acme.example")
                        await c.rcpt(f"r{n}.{i}@example.com")
                        d = await c.data(MSG)
                        if d.code == 250:
                            acked.append(d.message.rsplit(" ", 1)[1])
                finally:
                    c.close()
            except (aiosmtplib.SMTPException, OSError):
                await asyncio.sleep(0.05)  # the worker is gone: connect again once one listens

    senders = [asyncio.create_task(sender(n)) for n in range(6)]
    for _ in range(2):
        await wait_until(lambda: len(acked) >= 30, timeout=20)
        before = _workers(relay)
        os.kill(before[0], signal.SIGKILL)
        await wait_until(lambda b=before: bool(_workers(relay)) and not set(_workers(relay)) & set(b), timeout=20)
        acked_at_kill = len(acked)
        await wait_until(lambda n=acked_at_kill: len(acked) >= n + 30, timeout=20)
    stop.set()
    await asyncio.gather(*senders)
    await relay.app.intake.flush()
    queued = _queued(relay)
    assert acked and not set(acked) - queued
    assert relay.app.storage is not None
    known = await relay.app.storage.statuses.known_email_ids(acked)
    assert known == set(acked)


async def test_a_hung_worker_is_killed_and_replaced(relay_factory: RelayFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the heartbeat's first sleep starts with the App: pinging every 0.2 s from the start spares
    # waiting out the shipped PING_EVERY (5 s) before the first round (and no ping is in flight
    # with the shipped 20 s timeout when the worker hangs)
    monkeypatch.setattr("relay.workers.owner.PING_EVERY", 0.2)
    monkeypatch.setattr("relay.workers.owner.PING_TIMEOUT", 1.0)
    relay = await relay_factory({"intake.workers": 1})
    workers = relay.app.intake_workers
    assert workers is not None
    assert (workers.ping_every, workers.ping_timeout) == (0.2, 1.0)
    old = _workers(relay)[0]
    os.kill(old, signal.SIGSTOP)  # alive but answering nothing, like a loop stuck in a blocking call
    try:
        await wait_until(lambda: bool(_workers(relay)) and _workers(relay) != [old], timeout=20)
    finally:
        try:
            os.kill(old, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert workers.restarts == 1
    codes, code, _ = await _one_message(relay, ["after-hang@example.com"])
    assert codes == [250] and code == 250


async def test_stopping_lets_a_message_in_data_finish(relay_factory: RelayFactory) -> None:
    relay = await relay_factory({"intake.workers": 1})
    reader, writer = await asyncio.open_connection(relay.host, relay.port)

    async def reply() -> bytes:
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
        return line

    assert (await reply()).startswith(b"220")
    auth = f"\0{relay.api_user}\0{relay.key}".encode()
    for cmd in (b"EHLO client.test", b"AUTH PLAIN " + base64.b64encode(auth), b"MAIL FROM:<app@acme.example>",
                b"RCPT TO:<late@example.com>", b"DATA"):
        writer.write(cmd + b"\r\n")
        assert (await reply())[:1] in (b"2", b"3"), cmd
    writer.write(MSG[:40])
    await writer.drain()
    stopping = asyncio.create_task(relay.app.stop(grace=10))
    await asyncio.sleep(0.5)  # the worker got SIGTERM and stopped accepting; this session is in DATA
    writer.write(MSG[40:] + b".\r\n")
    await writer.drain()
    final = await reply()
    assert final.startswith(b"250 2.0.0 Ok: queued as "), final
    email_id = final.decode().rsplit(" ", 1)[1].strip()
    await stopping
    writer.close()
    assert relay.app.spool is not None
    assert (relay.app.spool.queue_dir / f"{email_id}.msg").exists()
    assert _staged(relay) == []
    storage = await open_storage(relay.cfg.storage.url)  # the App's is closed: its rows were written first
    try:
        rows = await storage.statuses.search(StatusFilter(account_id=relay.account_id, recipient="late@example.com"))
    finally:
        await storage.close()
    assert [r.email_id for r in rows.items] == [email_id]


async def _served_certificate_name(relay: RelayUnderTest) -> str:
    """The common name of the certificate the SMTP listener presents (STARTTLS on a raw socket)."""
    reader, writer = await asyncio.open_connection(relay.host, relay.port)
    try:
        async def reply() -> bytes:
            line = await reader.readline()
            while line[3:4] == b"-":
                line = await reader.readline()
            return line

        await reply()
        writer.write(b"EHLO client.test\r\n")
        await reply()
        writer.write(b"STARTTLS\r\n")
        assert (await reply()).startswith(b"220")
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        await writer.start_tls(ctx)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    finally:
        writer.close()


async def test_sighup_reaches_the_workers(relay_factory: RelayFactory) -> None:
    """A reload re-reads the certificate in the workers too (new handshakes present the new one),
    without restarting them."""
    relay = await relay_factory({"intake.workers": 1})
    pid = _workers(relay)[0]
    assert await _served_certificate_name(relay) == "relay.test"
    cfg = relay.cfg
    write_self_signed(cfg.path(cfg.tls.cert_file), cfg.path(cfg.tls.key_file), "renewed.test")
    await relay.app.reload()  # what SIGHUP runs: the owner reloads and signals its workers

    async def renewed() -> bool:
        return await _served_certificate_name(relay) == "renewed.test"

    await wait_until(renewed)
    assert _workers(relay) == [pid]  # a reload is not a restart
    codes, code, _ = await _one_message(relay, ["hup@example.com"])
    assert codes == [250] and code == 250


@pytest.mark.parametrize("days", [30])
async def test_bounce_list_read_by_workers(relay_factory: RelayFactory, days: int) -> None:
    """Suppression lookups happen in the worker, on the shared database: an entry added while it
    runs applies to the next RCPT."""
    relay = await relay_factory({"intake.workers": 1})
    codes, _, _ = await _one_message(relay, ["bounced@example.com"])
    assert codes == [250]
    now = utcnow()
    await relay.storage.suppressions.add([SuppressionEntry(
        account_id=relay.account_id, kind=ListKind.BOUNCE, value="bounced@example.com", created_at=now,
        expires_at=now + timedelta(days=days))])
    codes, _, _ = await _one_message(relay, ["bounced@example.com"])
    assert codes == [550]
