"""`mailrelay serve` under a systemd unit with WatchdogSec=: READY=1, then WATCHDOG=1 pings at half
of $WATCHDOG_USEC from the running server (what systemd sees through $NOTIFY_SOCKET)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(home: Path, sock_path: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "relay", "serve", "--home", str(home)],
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "NOTIFY_SOCKET": str(sock_path), **env})


@pytest.mark.slow
def test_serve_pings_the_watchdog_after_ready(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert main(["init", "--home", str(home), "--smtp", f"127.0.0.1:{_free_port()}", "--no-delivery"]) == 0
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    proc = _serve(home, sock_path, WATCHDOG_USEC="400000")  # WatchdogSec=0.4s: a ping every 0.2 s
    try:
        assert "READY=1" in sock.recv(4096).decode()
        ready_at = time.monotonic()
        sock.settimeout(2)
        pings = []
        while len(pings) < 5:
            pings.append(sock.recv(4096).decode())
        assert pings == ["WATCHDOG=1"] * 5
        assert time.monotonic() - ready_at < 2  # 5 pings: about 0.8 s, well within WatchdogSec each
        proc.send_signal(signal.SIGTERM)
        sock.settimeout(20)
        while (msg := sock.recv(4096).decode()) == "WATCHDOG=1":
            pass
        assert msg == "STOPPING=1"
        assert proc.wait(30) == 0
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_no_pings_when_systemd_watches_another_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert main(["init", "--home", str(home), "--smtp", f"127.0.0.1:{_free_port()}", "--no-delivery"]) == 0
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    proc = _serve(home, sock_path, WATCHDOG_USEC="400000", WATCHDOG_PID="1")
    try:
        assert "READY=1" in sock.recv(4096).decode()
        time.sleep(1.0)  # five intervals
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode() == "STOPPING=1"  # nothing between READY and STOPPING
        assert proc.wait(30) == 0
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
