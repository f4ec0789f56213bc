"""The systemd watchdog: when it pings, and that a blocked event loop stops the pings."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.systemd import watchdog, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def _drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    ("30000000", None, 15.0),  # half of WatchdogSec=30s
    ("400000", "self", 0.2),
    ("400000", "1", None),  # systemd expects the pings from another process
    ("400000", "x", None),
    (None, None, None),  # no WatchdogSec=
    ("0", None, None),
    ("soon", None, None),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert watchdog_interval() == expected


async def test_a_blocked_loop_sends_no_pings(notify_socket: socket.socket) -> None:
    task = asyncio.create_task(watchdog(0.05))
    try:
        await asyncio.sleep(0.3)
        assert _drain(notify_socket).count("WATCHDOG=1") >= 3
        time.sleep(0.6)  # the loop is stuck: twelve intervals without a chance to run
        assert _drain(notify_socket) == []
        await asyncio.sleep(0.3)  # unstuck: the pings resume
        assert _drain(notify_socket).count("WATCHDOG=1") >= 3
    finally:
        task.cancel()
    assert _drain(notify_socket) == []  # cancelled: no more pings
    await asyncio.sleep(0.15)
    assert _drain(notify_socket) == []
