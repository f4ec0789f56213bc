"""Two `mailrelay serve` processes, each with its own data directory and spool, on one PostgreSQL
database — set up with the CLI exactly as an operator would, driven over SMTP and HTTP only.

Proves, across real processes: a list entry made through either node stops (or frees) the other
node's next RCPT within a second; a status search on one node sees the mail both accepted; each
export task runs exactly once although both nodes' workers poll the queue, and its file is served
by the node that wrote it (the other answers 409 and names it); a revoke or a new key made with
the CLI applies to the next AUTH on both nodes, although both had the old key cached.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.cli import main
from relay.config_render import render_config
from tests.integration.conftest import _create_pg_database, _drop_pg_database

KEY = "multinode-key-0123456789"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"app1:{KEY}".encode()).decode()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    home: Path
    smtp_port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None

    def http(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             ) -> tuple[int, Any, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method,
                                     headers={**BASIC, **({"Content-Type": "application/json"} if data else {}),
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                status = r.status
                ctype = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raw, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
        return status, (json.loads(raw) if ctype.startswith("application/json") else None), raw

    def rcpt(self, rcpt: str) -> int:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as s:
            s.login("app1", KEY)
            s.mail("app@acme.example")
            code, _ = s.rcpt(rcpt)
            s.rset()
            return code

    def send(self, rcpt: str) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as s:
            s.login("app1", KEY)
            s.sendmail("app@acme.example", [rcpt], f"Subject: via {self.name}\r\n\r\nhello\r\n")


def _cli(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


def _set(home: Path, settings: dict[str, Any]) -> None:
    """Change keys of the mailrelay.toml `init` wrote, as an operator edits it."""
    path = home / "mailrelay.toml"
    table = tomllib.loads(path.read_text())
    flat = {f"{section}.{key}": value for section, keys in table.items() for key, value in keys.items()}
    path.write_text(render_config({**flat, **settings}))


def _until(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``pred``; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while not pred():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    db_name, url = asyncio.run(_create_pg_database())
    pair = (Node("node-a", tmp_path / "a", _free_port(), _free_port()),
            Node("node-b", tmp_path / "b", _free_port(), _free_port()))
    try:
        for n in pair:
            _cli("init", "--home", str(n.home), "--smtp", f"127.0.0.1:{n.smtp_port}", "--http",
                 f"127.0.0.1:{n.http_port}", "--storage-url", url, "--node-name", n.name, "--no-delivery")
            # the tests refuse stale keys on purpose: answer each at once, not after the 1 s pause
            _set(n.home, {"limits.auth_failure_delay": "0s"})
        _cli("users", "add", "app1", "--account", "acme", "--key", KEY, "--home", str(pair[0].home))
        for n in pair:
            n.proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--home", str(n.home)],
                                      stderr=(n.home / "serve.log").open("wb"), env={**os.environ, "NOTIFY_SOCKET": ""})
        for n in pair:
            def ready(n: Node = n) -> bool:
                assert n.proc is not None and n.proc.poll() is None, (n.home / "serve.log").read_text()
                try:
                    return n.http("GET", "/openapi.json")[0] == 200
                except OSError:
                    return False
            _until(ready, 30, f"{n.name} serving")
        yield pair
        for n in pair:
            assert n.proc is not None
            n.proc.send_signal(signal.SIGTERM)
            assert n.proc.wait(30) == 0, (n.home / "serve.log").read_text()[-3000:]
    finally:
        for n in pair:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait(10)
        asyncio.run(_drop_pg_database(db_name))


@pytest.mark.slow
def test_two_serve_processes_share_one_database(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    # a block made through A's API stops B's next RCPT; a no-interception made through B frees A's
    assert b.rcpt("x@example.com") == 250
    assert a.http("POST", "/v1/blocks", {"email_or_domain": "x@example.com"})[0] == 200
    took = _until(lambda: b.rcpt("x@example.com") == 550, 1.0, "block made on A applies on B")
    assert b.http("POST", "/v1/no_interceptions", {"email_or_domain": "x@example.com"})[0] == 200
    took = max(took, _until(lambda: a.rcpt("x@example.com") == 250, 1.0, "no-interception made on B applies on A"))
    # a complaint entry written by an operator's CLI on A's host: B refuses at once
    _cli("suppression", "add", "--list", "complaint", "angry@example.com", "--account", "acme", "--home", str(a.home))
    took = max(took, _until(lambda: b.rcpt("angry@example.com") == 550, 1.0, "complaint applies on B"))
    assert took < 1.0

    # status search on either node sees the mail both accepted
    a.send("via-a@example.com")
    b.send("via-b@example.com")
    for n in (a, b):
        def both_seen(n: Node = n) -> bool:
            _, body, _ = n.http("GET", "/v1/email_status?limit=100")
            return {r["recipient"] for r in body["result"]} >= {"via-a@example.com", "via-b@example.com"}
        _until(both_seen, 10, f"status search on {n.name} sees both nodes' mail")

    # six exports created through both nodes (each wakes its own worker; both poll the same queue):
    # each runs on exactly one node, and only that node serves its file
    ids = []
    for i in range(6):
        status, body, _ = (a, b)[i % 2].http("POST", "/v1/exports", {"email": "via-b@example.com"})
        assert status in (200, 201, 202), body
        ids.append(body["id"])

    def done() -> bool:
        tasks = [a.http("GET", f"/v1/exports/{i}")[1] for i in ids]
        return all(t["status"] == "succeeded" for t in tasks)
    _until(done, 30, "exports succeeded")
    by_node = {"node-a": a, "node-b": b}
    for task_id in ids:
        _, task, _ = b.http("GET", f"/v1/exports/{task_id}")
        assert task["attempts"] == 1, task  # claimed once, never re-run by the other node
        own = by_node[task["node"]]
        other = b if own is a else a
        status, _, raw = own.http("GET", f"/v1/exports/{task_id}/download")
        assert status == 200 and raw[:2] == b"\x1f\x8b"  # gzip
        status, body, _ = other.http("GET", f"/v1/exports/{task_id}/download")
        assert status == 409 and task["node"] in body["message"]
    assert not [p for n in (a, b) for p in (n.home / "exports").glob("*.part")]


def _auth(node: Node, user: str, key: str) -> int:
    with smtplib.SMTP("127.0.0.1", node.smtp_port, timeout=10) as s:
        s.ehlo()
        try:
            return s.login(user, key)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


def _cli_process(node: Node, *argv: str) -> str:
    """The CLI in its own process, as an operator runs it next to a running server."""
    done = subprocess.run([sys.executable, "-m", "relay", *argv, "--home", str(node.home)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_revoke_and_new_key_apply_to_the_next_auth_on_every_node(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    key = _cli_process(a, "users", "add", "u9", "--account", "acme").splitlines()[-1]
    for n in (a, b, a, b):
        assert _auth(n, "u9", key) == 235  # both nodes' caches are warm

    new_key = _cli_process(b, "users", "rotate-key", "u9").splitlines()[-1]
    for n in (a, b):
        assert _auth(n, "u9", key) == 535, n.name
        assert _auth(n, "u9", new_key) == 235, n.name

    assert _cli_process(a, "users", "revoke", "u9").strip() == "revoked u9"
    for n in (b, a):
        assert _auth(n, "u9", new_key) == 535, n.name
        assert n.http("GET", "/v1/messages/NOSUCHID", headers={
            "Authorization": "Basic " + base64.b64encode(f"u9:{new_key}".encode()).decode()})[0] == 401
    assert _auth(b, "app1", KEY) == 235  # the other users are untouched
