"""The `mailrelay` command line, as an operator (and the acceptance checks) use it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.cli import main
from tests.helpers.serve_process import smtp_when_up

KEY = "cli-test-key-123456"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    h = tmp_path / "home"
    rc, out, _ = run(capsys, "init", "--home", str(h), "--smtp", "127.0.0.1:0", "--no-delivery")
    assert rc == 0, out
    return h


def test_init_writes_config_cert_and_database(home: Path) -> None:
    text = (home / "mailrelay.toml").read_text()
    assert 'listen = "127.0.0.1:0"' in text
    assert "allow_auth_without_tls = true" in text and "AUTH is allowed WITHOUT TLS" in text
    assert (home / "tls" / "cert.pem").exists() and (home / "tls" / "key.pem").stat().st_mode & 0o077 == 0
    assert (home / "mailrelay.sqlite3").exists()


def test_home_defaults_to_env(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILRELAY_HOME", str(tmp_path / "envhome"))
    assert run(capsys, "init", "--no-delivery")[0] == 0
    assert (tmp_path / "envhome" / "mailrelay.toml").exists()
    rc, out, _ = run(capsys, "db", "status")
    assert rc == 0 and "up to date" in out


def test_users_add_list_revoke(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "users", "add", "app1", "--account", "acme", "--home", str(home))
    assert rc == 0
    generated = out.strip().splitlines()[-1]
    assert len(generated) >= 32 and " " not in generated
    rc, out, _ = run(capsys, "users", "add", "app2", "--account", "acme", "--key", KEY, "--home", str(home))
    assert rc == 0 and out.strip().splitlines()[-1] == KEY
    rc, _, err = run(capsys, "users", "add", "app2", "--account", "acme", "--home", str(home))
    assert rc == 1 and "already exists" in err
    rc, out, _ = run(capsys, "users", "list", "--json", "--home", str(home))
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["api_user"] for r in rows} == {"app1", "app2"} and all(r["account"] == "acme" for r in rows)
    assert run(capsys, "users", "revoke", "app1", "--home", str(home))[0] == 0
    rc, out, _ = run(capsys, "users", "list", "--json", "--home", str(home))
    state = {json.loads(line)["api_user"]: json.loads(line)["active"] for line in out.splitlines()}
    assert state == {"app1": False, "app2": True}
    rc, _, err = run(capsys, "users", "revoke", "nobody", "--home", str(home))
    assert rc == 1 and "no active API_USER" in err


def test_suppression_add_list_remove(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "users", "add", "app1", "--account", "acme", "--key", KEY, "--home", str(home))[0] == 0
    h = ("--home", str(home), "--account", "acme")
    assert run(capsys, "suppression", "add", "--list", "block", "Bad@Example.com", "spam.example", *h)[0] == 0
    rc, out, _ = run(capsys, "suppression", "list", "--list", "block", "--json", *h)
    values = {json.loads(line)["value"] for line in out.splitlines()}
    assert values == {"bad@example.com", "spam.example"}
    rc, _, err = run(capsys, "suppression", "add", "--list", "complaint", "example.com", *h)
    assert rc == 1 and "addresses, not domains" in err
    assert run(capsys, "suppression", "add", "--list", "unsubscribe", "u@example.com", "--reason-code", "2", *h)[0] == 0
    rc, out, _ = run(capsys, "suppression", "list", "--list", "unsubscribe", "--json", *h)
    assert json.loads(out)["reason_code"] == 2
    rc, out, _ = run(capsys, "suppression", "add", "--list", "bounce", "gone@qq.com", *h)
    rc, out, _ = run(capsys, "suppression", "list", "--list", "bounce", "--json", *h)
    entry = json.loads(out)
    assert entry["expire_time"] is not None and entry["hit_count"] == 1
    # the CLI uses the suppression service's Tencent list (vip.foxmail.com included): a first bounce
    # lasts 1 day there, as from delivery or feedback; elsewhere 30 days
    for address, days in (("gone@vip.foxmail.com", 1), ("gone@example.org", 30)):
        assert run(capsys, "suppression", "add", "--list", "bounce", address, *h)[0] == 0
        rc, out, _ = run(capsys, "suppression", "list", "--list", "bounce", address, "--json", *h)
        e = json.loads(out)
        lasts = datetime.fromisoformat(e["expire_time"]) - datetime.fromisoformat(e["create_time"])
        assert lasts == timedelta(days=days), address
    rc, out, _ = run(capsys, "suppression", "remove", "--list", "block", "bad@example.com", *h)
    assert rc == 0 and "removed 1" in out


def test_suppression_import_reports_bad_lines(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "users", "add", "app9", "--account", "acme", "--key", KEY, "--home", str(home))[0] == 0
    assert run(capsys, "users", "add", "other", "--account", "globex", "--key", KEY, "--home", str(home))[0] == 0
    f = tmp_path / "blocks.csv"
    f.write_text("email_or_domain,api_user\nok1@example.com\nnot an address\n\nok2@example.com,app9\n"
                 "blocked.example\na@b@c\nx@example.com,other\ny@example.com,nobody\n")
    rc, out, err = run(capsys, "suppression", "import", "--list", "block", str(f), "--no-progress",
                       "--home", str(home), "--account", "acme")
    assert rc == 1  # the good lines are imported, but a script must learn that some were not
    assert "imported 3 block entries; skipped 4 bad lines" in out
    assert err.splitlines()[-1] == f"mailrelay: {f}: 4 bad lines skipped (listed above)"
    assert "line 3:" in err and "line 7:" in err
    assert "line 8: api_user 'other' is not an API user" in err and "line 9: api_user 'nobody'" in err
    rc, out, _ = run(capsys, "suppression", "list", "--list", "block", "--json", "--home", str(home),
                     "--account", "acme")
    scopes = {json.loads(line)["value"]: json.loads(line)["api_user"] for line in out.splitlines()}
    assert scopes == {"ok1@example.com": "all", "ok2@example.com": "app9", "blocked.example": "all"}
    rc, _, err = run(capsys, "suppression", "import", "--list", "block", str(f), "--no-progress",
                     "--api-user", "other", "--home", str(home), "--account", "acme")
    assert rc == 1 and "not an API user of account 'acme'" in err


def test_imported_entries_get_the_lists_default_expiry(home: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "users", "add", "app1", "--account", "acme", "--key", KEY, "--home", str(home))[0] == 0
    f = tmp_path / "list.txt"
    f.write_text("a@example.com\nb@qq.com\n")
    h = ("--no-progress", "--home", str(home), "--account", "acme")
    for kind in ("complaint", "bounce", "unsubscribe"):
        assert run(capsys, "suppression", "import", "--list", kind, str(f), *h)[0] == 0
    days = {}
    for kind in ("complaint", "bounce", "unsubscribe"):
        _, out, _ = run(capsys, "suppression", "list", "--list", kind, "--json", "--home", str(home),
                        "--account", "acme")
        for row in map(json.loads, out.splitlines()):
            left = row["expire_time"] and datetime.fromisoformat(row["expire_time"]) - datetime.now(UTC)
            days[(kind, row["value"])] = round(left.total_seconds() / 86400) if left else None
    assert days == {("complaint", "a@example.com"): 180, ("complaint", "b@qq.com"): 180,  # SPEC §7
                    ("bounce", "a@example.com"): 30, ("bounce", "b@qq.com"): 1,  # Tencent: 2^(N-1) days
                    ("unsubscribe", "a@example.com"): None, ("unsubscribe", "b@qq.com"): None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_submit_and_status_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "served"
    port = _free_port()
    assert run(capsys, "init", "--home", str(home), "--smtp", f"127.0.0.1:{port}", "--no-delivery")[0] == 0
    assert run(capsys, "users", "add", "app1", "--account", "acme", "--key", KEY, "--home", str(home))[0] == 0
    assert run(capsys, "suppression", "add", "--list", "complaint", "angry@example.com", "--home", str(home),
               "--account", "acme")[0] == 0
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--home", str(home)],
                            stderr=log.open("wb"), env={**os.environ, "NOTIFY_SOCKET": ""})
    try:
        s = smtp_when_up(port, proc, log)
        s.login("app1", KEY)
        refused = s.sendmail("app@acme.example", ["angry@example.com", "happy@example.com"],
                             "Subject: cli\r\nX-Email-Type: transactional\r\n\r\nhello\r\n")
        assert refused == {"angry@example.com": (550, b"5.7.1 Blacklist:complaint (worker:address in complaint list)")}
        s.quit()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"127.0.0.1:{port}" in log.read_text()  # the bound address is logged
    rc, out, _ = run(capsys, "status", "search", "--account", "acme", "--json", "--home", str(home))
    assert rc == 0
    rows = {json.loads(line)["recipient"]: json.loads(line) for line in out.splitlines()}
    assert rows["happy@example.com"]["status"] == 18, rows["happy@example.com"]
    assert rows["happy@example.com"]["email_type"] == "transactional"
    assert rows["angry@example.com"]["status"] == 4 and rows["angry@example.com"]["sub_status"] == 401
    assert rows["angry@example.com"]["reason"] == "Blacklist:complaint (worker:address in complaint list)"
    assert rows["happy@example.com"]["request_ip"] == "127.0.0.1" and rows["happy@example.com"]["log"]
    _, out, _ = run(capsys, "status", "search", "--account", "acme", "--status", "4", "--json", "--home", str(home))
    assert [json.loads(line)["recipient"] for line in out.splitlines()] == ["angry@example.com"]
    today = datetime.now(UTC).date().isoformat()  # --to with a date includes that day, like end_date
    _, out, _ = run(capsys, "status", "search", "--account", "acme", "--from", today, "--to", today, "--json",
                    "--home", str(home))
    assert len(out.splitlines()) == 2


def test_serve_refuses_a_schema_that_is_behind(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "mailrelay.sqlite3").unlink()  # an empty database: schema version 0
    rc, _, err = run(capsys, "serve", "--home", str(home))
    assert rc == 1 and "run `mailrelay db migrate`" in err
    rc, out, _ = run(capsys, "db", "migrate", "--home", str(home))
    assert rc == 0 and "applied migrations: 1" in out
    rc, out, _ = run(capsys, "db", "migrate", "--home", str(home))
    assert rc == 0 and "up to date" in out


@pytest.mark.slow
def test_systemd_notify_ready_and_stopping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "sd"
    port = _free_port()
    assert run(capsys, "init", "--home", str(home), "--smtp", f"127.0.0.1:{port}", "--no-delivery")[0] == 0
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--home", str(home)],
                            stderr=subprocess.DEVNULL, env={**os.environ, "NOTIFY_SOCKET": str(sock_path)})
    try:
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:  # listening once READY
            assert c.recv(512).startswith(b"220 ")
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in sock.recv(4096).decode()
        assert proc.wait(30) == 0
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
