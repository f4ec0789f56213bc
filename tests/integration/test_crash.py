"""kill -9 under load: every message answered 250 survives; a message cut off in DATA never appears.

The server runs as a real subprocess (`mailrelay serve`), several clients submit concurrently,
one client stalls in the middle of DATA, and the process is killed with SIGKILL. After a restart
(which reconciles spool and status table) every acknowledged email_id must be in the spool and
in the status table, and the stalled message must be nowhere.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiosmtplib
import pytest

from storage import open_storage
from storage.records import Status, StatusFilter

pytestmark = pytest.mark.slow

KEY = "crash-test-key-123456"
MARKER = "CUT-OFF-IN-DATA-7f3a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args, "--home", str(home)], capture_output=True,
                          text=True, timeout=60, check=True)


async def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited during start-up"
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("server did not start listening")


def _serve(home: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "relay", "serve", "--home", str(home)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def _submitter(port: int, acked: list[str], stop: asyncio.Event, n: int) -> None:
    i = 0
    while not stop.is_set():
        try:
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5, start_tls=False)
            await c.connect()
            await c.login("app1", KEY)
            while not stop.is_set():
                i += 1
                body = f"Subject: load {n}-{i}\r\n\r\n" + "x" * 3000 + "\r\n"
                _, msg = await c.sendmail("app@acme.example", [f"r{n}-{i}@example.com"], body)
                acked.append(msg.rsplit(" ", 1)[1])
        except (aiosmtplib.SMTPException, OSError):
            await asyncio.sleep(0.05)


async def _stall_in_data(port: int, started: asyncio.Event) -> None:
    try:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False)
        await c.connect()
        await c.login("app1", KEY)
        await c.mail("app@acme.example")
        await c.rcpt("stalled@example.com")
        await c.execute_command(b"DATA")
        assert c.transport is not None
        c.transport.write(f"Subject: {MARKER}\r\n\r\nhalf a message {MARKER}\r\n".encode())
        started.set()
        await asyncio.sleep(60)
    except (aiosmtplib.SMTPException, OSError):
        started.set()


async def test_kill_dash_nine_loses_nothing_acknowledged(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    _cli(home, "init", "--smtp", f"127.0.0.1:{port}", "--no-delivery")
    _cli(home, "users", "add", "app1", "--account", "acme", "--key", KEY)
    log = tmp_path / "serve.log"
    proc = _serve(home, log)
    try:
        await _wait_port(port, proc)
        acked: list[str] = []
        stop = asyncio.Event()
        stalled = asyncio.Event()
        tasks = [asyncio.create_task(_submitter(port, acked, stop, n)) for n in range(8)]
        staller = asyncio.create_task(_stall_in_data(port, stalled))
        await asyncio.wait_for(stalled.wait(), 10)
        await asyncio.sleep(1.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        staller.cancel()
        await asyncio.gather(staller, return_exceptions=True)
        assert len(acked) > 20, f"too little load before the kill ({len(acked)}): {log.read_text()[-2000:]}"

        # Restart: reconciliation runs before listening; then stop cleanly with SIGTERM.
        proc = _serve(home, log)
        await _wait_port(port, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    queue_dir = home / "spool" / "queue"
    spooled = {p.name[:-4] for p in queue_dir.iterdir()}
    missing = [e for e in acked if e not in spooled]
    assert not missing, f"{len(missing)} acknowledged messages are not in the spool"
    for p in queue_dir.iterdir():
        assert MARKER.encode() not in p.read_bytes(), "a message cut off in DATA was spooled"
    assert not list((home / "spool" / "tmp").iterdir())

    storage = await open_storage(f"sqlite:///{home / 'mailrelay.sqlite3'}")
    try:
        known = await storage.statuses.known_email_ids(acked)
        assert set(acked) <= known, f"{len(set(acked) - known)} acknowledged messages have no status rows"
        acct = await storage.accounts.get_account("acme")
        assert acct is not None
        page = await storage.statuses.search(StatusFilter(account_id=acct.id, recipient="stalled@example.com"))
        assert page.items == []
        sample = await storage.statuses.get_message(acked[0])
        assert sample and sample[0].status == Status.SENDING
    finally:
        await storage.close()
