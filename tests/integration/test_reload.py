"""Configuration reload of a running `mailrelay serve` (SIGHUP, what systemd's ExecReload sends):
reloadable keys apply at once, others are named as needing a restart, a broken file changes
nothing, and the server never stops serving."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.cli import main
from relay.config import config_from_dict
from relay.reload import split_changes

KEY = "reload-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _search(port: int) -> tuple[int, dict[str, object]]:
    auth = "Basic " + base64.b64encode(f"app1:{KEY}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/email_status", headers={"Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _until(pred: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _log_events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_split_changes_names_what_needs_a_restart(tmp_path: Path) -> None:
    old = config_from_dict({}, tmp_path)
    new = config_from_dict({"http": {"search_per_minute": 5}, "smtp": {"listen": "127.0.0.1:2600"},
                            "log": {"level": "debug"}}, tmp_path)
    assert split_changes(old, new) == (["http.search_per_minute", "log.level"], ["smtp.listen"])
    assert split_changes(old, old) == ([], [])


@pytest.mark.slow
def test_sighup_reloads_without_stopping(tmp_path: Path) -> None:
    home = tmp_path / "home"
    http_port = _free_port()
    assert main(["init", "--home", str(home), "--smtp", f"127.0.0.1:{_free_port()}", "--http",
                 f"127.0.0.1:{http_port}", "--no-delivery"]) == 0
    assert main(["users", "add", "app1", "--account", "acme", "--key", KEY, "--home", str(home)]) == 0
    cfg_file = home / "mailrelay.toml"
    original = cfg_file.read_text()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--home", str(home)],
                            stderr=log.open("wb"), env={**os.environ, "NOTIFY_SOCKET": ""})
    try:
        def serving() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return _search(http_port)[0] == 200
            except OSError:
                return False
        _until(serving, "the server answers")

        # a reloadable key and one that is not
        edited = original.replace("# search_per_minute = 60", "search_per_minute = 2")
        edited = edited.replace('# format = "json"', 'format = "text"')
        assert edited.count("\n# ") == original.count("\n# ") - 2  # both keys really set
        cfg_file.write_text(edited)
        proc.send_signal(signal.SIGHUP)
        _until(lambda: any(e.get("event") == "reloaded" for e in _log_events(log)), "reload logged")
        reloaded = next(e for e in _log_events(log) if e.get("event") == "reloaded")
        assert reloaded["applied"] == ["http.search_per_minute"] and reloaded["needs_restart"] == ["log.format"]
        # the intake worker got the SIGHUP too; its lines say which process wrote them
        _until(lambda: any(e.get("event") == "worker_reloaded" for e in _log_events(log)), "worker reload logged")
        worker_line = next(e for e in _log_events(log) if e.get("event") == "worker_reloaded")
        assert worker_line["process"] == "intake-worker" and worker_line["pid"] != proc.pid
        assert "process" not in reloaded  # the owner's lines
        statuses = [_search(http_port) for _ in range(3)]  # the budget of this minute is now 2
        assert [s for s, _ in statuses][-1] == 429
        assert "at most 2 status searches per minute" in str(statuses[-1][1]["message"])

        # a broken file is refused as a whole; the server keeps serving
        cfg_file.write_text(original + "\n[http]\nnot toml at all = =\n")
        proc.send_signal(signal.SIGHUP)
        _until(lambda: any(e.get("event") == "reload_refused" for e in _log_events(log)), "refusal logged")
        assert proc.poll() is None
        assert _search(http_port)[0] == 429  # still the reloaded limit, still answering

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
