"""One server per data directory: a second `mailrelay serve` on the same home exits 1 at once,
names the running server's pid and changes nothing (its control socket and SMTP keep working);
the control socket is replaced only when it is stale, and a server unlinks only its own."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from relay.control import ControlServer, call
from tests.helpers.serve_process import smtp_when_up

KEY = "single-instance-key-0123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(home: Path, *args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args, "--home", str(home)], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def _serve(home: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "relay", "serve", "--home", str(home)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "NOTIFY_SOCKET": ""})


def _submit(port: int, proc: subprocess.Popen[bytes], log: Path, rcpt: str) -> None:
    s = smtp_when_up(port, proc, log)
    s.login("app1", KEY)
    assert s.sendmail("app@acme.example", [rcpt], "Subject: one\r\n\r\nhello\r\n") == {}
    s.quit()


@pytest.mark.slow
def test_second_serve_exits_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    # Delivery on (the queues live in the server), towards a relayhost nobody listens on: mail waits.
    assert _cli(home, "init", "--smtp", f"127.0.0.1:{port}", "--relayhost", f"127.0.0.1:{_free_port()}").returncode == 0
    assert _cli(home, "users", "add", "app1", "--account", "acme", "--key", KEY).returncode == 0
    assert _cli(home, "users", "add", "app2", "--account", "globex", "--key", KEY).returncode == 0
    log = tmp_path / "first.log"
    first = _serve(home, log)
    try:
        _submit(port, first, log, "one@example.com")
        sock = home / "control.sock"
        before = sock.stat().st_ino

        second = subprocess.run([sys.executable, "-m", "relay", "serve", "--home", str(home)], capture_output=True,
                                text=True, timeout=30)
        assert second.returncode == 1
        assert second.stderr == f"mailrelay: another server is running on {home} (pid {first.pid})\n"
        assert second.stdout == ""
        assert sock.stat().st_ino == before  # the running server's socket was not touched
        assert (home / "mailrelay.lock").read_text().strip() == str(first.pid)

        listed = _cli(home, "queues", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert '"api_user": "app1"' in listed.stdout and '"domain": "example.com"' in listed.stdout
        # --account narrows to that account's API users; an unknown account or API_USER is an error
        assert _cli(home, "queues", "list", "--account", "globex").stdout == ""
        assert "app1" in _cli(home, "queues", "list", "--account", "acme").stdout
        for args in (("--account", "nosuch"), ("--api-user", "nosuch")):
            r = _cli(home, "queues", "list", *args)
            assert r.returncode == 1 and r.stderr.startswith("mailrelay: no such "), r.stderr
        _submit(port, first, log, "two@example.com")  # SMTP still answers 250

        # `| head` closed stdout early: no traceback, exit 141 (as if killed by SIGPIPE)
        r_fd, w_fd = os.pipe()
        os.close(r_fd)
        try:
            closed = _cli(home, "status", "search", "--account", "acme", "--json", stdout=w_fd)
        finally:
            os.close(w_fd)
        assert (closed.returncode, closed.stderr) == (141, "")

        first.kill()  # kill -9: the lock goes with the process, the socket file stays behind, stale
        first.wait(10)
        assert sock.exists()
        first = _serve(home, log)
        _submit(port, first, log, "three@example.com")
        assert _cli(home, "queues", "list").returncode == 0
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        assert not sock.exists()  # its own socket is removed on a clean stop
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)


async def test_control_socket_in_use_is_neither_replaced_nor_unlinked(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    running = ControlServer(path, None, exports_wake=lambda: None)
    await running.start()
    try:
        intruder = ControlServer(path, None, exports_wake=lambda: None)
        with pytest.raises(OSError, match="another process answers"):
            await intruder.start()
        await intruder.stop()  # never bound: must not remove the running server's socket
        assert await call(path, "exports.wake") is None
    finally:
        await running.stop()
    assert not path.exists()


async def test_control_socket_that_is_not_ours_survives_stop(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    old = ControlServer(path, None, exports_wake=lambda: None)
    await old.start()
    path.unlink()  # e.g. an operator removed it and another server bound the path since
    newer = ControlServer(path, None, exports_wake=lambda: None)
    await newer.start()
    try:
        await old.stop()
        assert await call(path, "exports.wake") is None  # the newer server's socket is still there
    finally:
        await newer.stop()
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        await ControlServer(path, None).start()
    assert path.read_text() == "not a socket"


async def test_stale_control_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # bound, never listening: what a killed server leaves behind
    server = ControlServer(path, None, exports_wake=lambda: None)
    await server.start()
    try:
        assert await asyncio.wait_for(call(path, "exports.wake"), 5) is None
    finally:
        await server.stop()
