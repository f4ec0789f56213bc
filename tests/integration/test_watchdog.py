"""`mailrelay serve` under a systemd unit with WatchdogSec=: READY=1, then WATCHDOG=1 pings at half
of $WATCHDOG_USEC from the running server (what systemd sees through $NOTIFY_SOCKET)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from relay.cli import main
from tests.helpers.systemd_notify import serving
from tests.integration.delivery_harness import free_port

pytestmark = pytest.mark.slow


def _home(tmp_path: Path) -> list[str]:
    home = tmp_path / "home"
    assert main(["init", "--home", str(home), "--smtp", f"127.0.0.1:{free_port('127.0.0.1')}",
                 "--no-delivery"]) == 0
    return [sys.executable, "-m", "relay", "serve", "--home", str(home)]


def test_serve_pings_the_watchdog_after_ready(tmp_path: Path) -> None:
    # WatchdogSec=0.4s: a ping every 0.2 s
    with serving(_home(tmp_path), tmp_path / "notify.sock", {"WATCHDOG_USEC": "400000"}) as (proc, notify):
        assert "READY=1" in notify.recv()
        ready_at = time.monotonic()
        assert [notify.recv(timeout=2) for _ in range(5)] == ["WATCHDOG=1"] * 5
        assert time.monotonic() - ready_at < 2  # 5 pings: about 0.8 s
        proc.send_signal(signal.SIGTERM)
        assert notify.recv_skipping_pings() == "STOPPING=1"
        assert proc.wait(30) == 0


def test_no_pings_when_systemd_watches_another_process(tmp_path: Path) -> None:
    env = {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}
    with serving(_home(tmp_path), tmp_path / "notify.sock", env) as (proc, notify):
        assert "READY=1" in notify.recv()
        time.sleep(1.0)  # five intervals
        proc.send_signal(signal.SIGTERM)
        assert notify.recv() == "STOPPING=1"  # nothing between READY and STOPPING
        assert proc.wait(30) == 0
