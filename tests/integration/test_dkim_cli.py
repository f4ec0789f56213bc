"""`mailrelay dkim add|list|remove` as an operator uses them (both backends), and end to end: a key
added with the CLI while the server runs signs the next message submitted over SMTP, and dkimpy
verifies it as the MX received it against the record the CLI printed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import pytest

from relay.cli import main
from relay.delivery.outgoing import POOL_MIN_BYTES
from storage import open_storage
from storage.records import DkimAlgorithm
from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import wait_until
from tests.integration.test_dkim_delivery import signature_tags, tamper, verify

RECORD = re.compile(r'^(?P<name>(?P<sel>[a-z0-9._-]+)\._domainkey\.(?P<dom>[a-z0-9.-]+))\. IN TXT '
                    r'"(?P<txt>v=DKIM1; k=(?P<k>rsa|ed25519); p=(?P<p>[A-Za-z0-9+/]+=*))"$')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


async def arun(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI from an async test (it runs its own event loop: in a thread)."""
    rc = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def home(tmp_path: Path, storage_url: str, capsys: pytest.CaptureFixture[str]) -> Path:
    h = tmp_path / "home"
    rc, out, err = run(capsys, "init", "--home", str(h), "--smtp", "127.0.0.1:0", "--no-delivery",
                       "--storage-url", storage_url)
    assert rc == 0, out + err
    return h


def test_dkim_add_prints_the_record_and_keeps_the_key(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "dkim", "add", "Acme.Example", "--home", str(home))
    assert rc == 0, err
    last = out.rstrip("\n").splitlines()[-1]
    m = RECORD.match(last)
    assert m is not None, last
    selector = f"mr{datetime.now(UTC):%Y%m}"  # the default selector
    assert (m["sel"], m["dom"], m["k"]) == (selector, "acme.example", "rsa")
    assert last == f'{selector}._domainkey.acme.example. IN TXT "v=DKIM1; k=rsa; p={m["p"]}"'
    assert f"dig +short TXT {selector}._domainkey.acme.example" in out
    path = home / "dkim" / "acme.example" / f"{selector}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")

    rc, out, err = run(capsys, "dkim", "add", "acme.example", "--selector", "ed1", "--algorithm", "ed25519",
                       "--account", "acme", "--home", str(home))
    assert rc == 1 and "no such account: 'acme'" in err and not (home / "dkim" / "acme.example" / "ed1.key").exists()
    assert run(capsys, "users", "add", "app1", "--account", "acme", "--home", str(home))[0] == 0
    rc, out, err = run(capsys, "dkim", "add", "acme.example", "--selector", "ed1", "--algorithm", "ed25519",
                       "--account", "acme", "--home", str(home))
    assert rc == 0, err
    ed = RECORD.match(out.rstrip("\n").splitlines()[-1])
    assert ed is not None and ed["k"] == "ed25519" and ed["sel"] == "ed1"
    assert stat.S_IMODE((home / "dkim" / "acme.example" / "ed1.key").stat().st_mode) == 0o600

    rc, out, _ = run(capsys, "dkim", "list", "--json", "--home", str(home))
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["domain"], r["selector"], r["algorithm"], r["account"]) for r in rows] == [
        ("acme.example", "ed1", "ed25519", "acme"), ("acme.example", selector, "rsa", None)]  # newest first
    assert rows[1]["dns_name"] == f"{selector}._domainkey.acme.example" and rows[1]["dns_txt"] == m["txt"]
    assert "private" not in json.dumps(rows) and "BEGIN" not in out  # private keys are never listed
    rc, out, _ = run(capsys, "dkim", "list", "--home", str(home))
    assert rc == 0 and "ed1" in out and "(any)" in out and selector in out

    # a selector holds one key: the same selector again is refused, nothing changes
    rc, _, err = run(capsys, "dkim", "add", "acme.example", "--selector", "ed1", "--home", str(home))
    assert rc == 1 and "already has a key with selector 'ed1'" in err
    for bad in (["dkim", "add", "not a domain"], ["dkim", "add", "acme.example", "--selector", "a;b"],
                ["dkim", "remove", "acme.example", "--selector", "nope"]):
        rc, _, err = run(capsys, *bad, "--home", str(home))
        assert rc == 1 and err.startswith("mailrelay: "), (bad, err)

    rc, out, err = run(capsys, "dkim", "remove", "acme.example", "--selector", "ed1", "--home", str(home))
    assert rc == 0, err
    assert not (home / "dkim" / "acme.example" / "ed1.key").exists()
    rc, out, _ = run(capsys, "dkim", "list", "--json", "--home", str(home))
    assert [json.loads(line)["selector"] for line in out.splitlines()] == [selector]

    async def stored() -> list[tuple[str, str, DkimAlgorithm]]:
        from relay.commands.common import load_home_config
        st = await open_storage(load_home_config(home).storage.url)
        try:
            return [(k.domain, k.selector, k.algorithm) for k in await st.dkim.list()]
        finally:
            await st.close()

    assert asyncio.run(stored()) == [("acme.example", selector, DkimAlgorithm.RSA)]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_key_added_with_the_cli_signs_mail_submitted_over_smtp(
        backend: str, relay_factory: RelayFactory, sink: ScriptedMx, capsys: pytest.CaptureFixture[str]) -> None:
    relay = await relay_factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                                 "delivery.ehlo_name": "relay.test", "delivery.dkim_cache_ttl": "200ms"},
                                backend=backend)
    rc, out, err = await arun(capsys, "dkim", "add", "acme.example", "--selector", "s2026",
                              "--home", str(relay.home))
    assert rc == 0, err
    m = RECORD.match(out.rstrip("\n").splitlines()[-1])
    assert m is not None
    async with LoopbackDns() as dns:
        dns.add_txt(m["name"], m["txt"])  # the operator publishes the printed record
        await asyncio.sleep(0.3)  # the server's key snapshot expires (delivery.dkim_cache_ttl)
        c = await relay.client()
        body = ("From: Acme <news@mail.acme.example>\r\nTo: someone@example.com\r\nSubject: e2e\r\n"
                "X-Label: spring-sale\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n.a dot line\r\n")
        await c.sendmail("app@acme.example", ["someone@example.com", "two@example.org"], body.encode())
        await c.quit()
        await wait_until(lambda: len(sink.messages) == 2)
        for got in sink.messages:
            tags = signature_tags(got.content)
            assert (tags["d"], tags["s"]) == ("acme.example", "s2026")
            assert b"\r\nFeedback-ID: spring-sale:app1:acme:mailrelay\r\n" in got.content
            assert b"X-Label" not in got.content
            assert await verify(dns, got.content)
            assert not await verify(dns, tamper(got.content, b"dot line", b"dot-line"))


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` other than its SMTP intake workers ([intake] workers)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat_file.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"relay.workers.worker" not in cmdline:
            found.append(int(stat_file.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
async def test_served_relay_signs_in_worker_processes_and_stops_them(
        tmp_path: Path, sink: ScriptedMx, capsys: pytest.CaptureFixture[str]) -> None:
    """`mailrelay serve` as a process: a small message is signed in a thread (no worker process is
    started), a large one (>= POOL_MIN_BYTES) by its worker processes (spawned from `python -m
    relay`), and SIGTERM leaves none of them behind."""
    home = tmp_path / "served"
    port = _free_port()
    assert (await arun(capsys, "init", "--home", str(home), "--smtp", f"127.0.0.1:{port}",
               "--relayhost", f"127.0.0.2:{sink.port}"))[0] == 0
    assert (await arun(capsys, "users", "add", "app1", "--account", "acme", "--key", "serve-key-123456",
                       "--home", str(home)))[0] == 0
    rc, out, err = await arun(capsys, "dkim", "add", "acme.example", "--selector", "proc", "--home", str(home))
    assert rc == 0, err
    m = RECORD.match(out.rstrip("\n").splitlines()[-1])
    assert m is not None
    log = tmp_path / "serve.log"
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "serve", "--home", str(home), stderr=log_file,
            env={**os.environ, "NOTIFY_SOCKET": ""})
    try:
        async with LoopbackDns() as dns:
            dns.add_txt(m["name"], m["txt"])
            deadline = time.monotonic() + 20
            while True:
                try:
                    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
                    await c.connect()
                    break
                except (OSError, aiosmtplib.SMTPException):
                    assert time.monotonic() < deadline and proc.returncode is None, log.read_text()
                    await asyncio.sleep(0.1)
            await c.login("app1", "serve-key-123456")
            head = b"From: app@acme.example\r\nTo: someone@example.com\r\nSubject: proc\r\n\r\n"
            await c.sendmail("app@acme.example", ["someone@example.com"], head + b"hi\r\n")
            await wait_until(lambda: len(sink.messages) == 1, timeout=30)
            assert signature_tags(sink.messages[0].content)["s"] == "proc"
            assert await verify(dns, sink.messages[0].content)
            assert not _children(proc.pid), "a small message is signed in a thread"
            await c.sendmail("app@acme.example", ["someone@example.com"], head + (b"x" * 76 + b"\r\n") * 1000)
            await c.quit()
            await wait_until(lambda: len(sink.messages) == 2, timeout=30)
            assert len(sink.messages[1].content) > POOL_MIN_BYTES
            assert signature_tags(sink.messages[1].content)["s"] == "proc"
            assert await verify(dns, sink.messages[1].content)
        workers = _children(proc.pid)
        assert workers, "a large message is signed in worker processes"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()
        await wait_until(lambda: not any(_alive(w) for w in workers), timeout=10)
        assert "Traceback" not in log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
