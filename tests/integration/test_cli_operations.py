"""The command line as an operator's first hour meets it: `init` never overwrites a home (`--force`
keeps its values and secrets), an unknown account is an error, secrets are not printed, `--version`,
and errors are one `mailrelay:` line with a non-zero exit, never a traceback."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from relay.cli import main

KEY = "ops-cli-test-key-123456"
UNREADABLE = "mailrelay: /nonexistent.eml: cannot read it (FileNotFoundError: No such file or directory)\n"
NOSUCH = "mailrelay: no such account: 'nosuch' (`mailrelay users add API_USER --account NAME` creates one)\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _process(*argv: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *argv], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=60)


def _toml(home: Path) -> dict[str, dict[str, object]]:
    return tomllib.loads((home / "mailrelay.toml").read_text())


def test_init_refuses_an_existing_home_and_force_keeps_what_was_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    cfg_file = home / "mailrelay.toml"
    rc, out, _ = run(capsys, "init", "--home", str(home), "--smtp", "127.0.0.1:2601", "--http", "127.0.0.1:2602",
                     "--relayhost", "127.0.0.1:2603", "--node-name", "n1", "--no-delivery")
    assert rc == 0
    token = _toml(home)["http"]["admin_token"]
    assert isinstance(token, str) and len(token) >= 24 and not token.startswith("-")
    assert f"HTTP admin token: http.admin_token in {cfg_file}\n" in out and token not in out
    assert cfg_file.stat().st_mode & 0o777 == 0o600  # it holds the admin token
    # the operator edits the file by hand, as operators do
    cfg_file.write_text(cfg_file.read_text().replace('# level = "info"', 'level = "debug"'))
    before = cfg_file.read_bytes()
    secrets_before = {p: (home / p).read_bytes() for p in ("verp.key", "tls/cert.pem", "tls/key.pem")}

    rc, out, err = run(capsys, "init", "--home", str(home), "--smtp", "127.0.0.1:2604")
    assert rc == 1 and out == ""
    assert err.startswith(f"mailrelay: {home} is already initialised") and "--force" in err and err.count("\n") == 1
    assert cfg_file.read_bytes() == before and not (home / "mailrelay.toml.bak").exists()

    rc, out, _ = run(capsys, "init", "--home", str(home), "--force", "--smtp", "127.0.0.1:2604", "--http",
                     "127.0.0.1:2605")
    assert rc == 0 and token not in out
    assert (home / "mailrelay.toml.bak").read_bytes() == before
    cfg = _toml(home)
    assert cfg["smtp"]["listen"] == "127.0.0.1:2604" and cfg["http"]["listen"] == "127.0.0.1:2605"  # given now
    assert cfg["http"]["admin_token"] == token  # kept, although --http was given again
    assert cfg["delivery"] == {"relayhost": "127.0.0.1:2603", "enabled": False}
    assert cfg["node"]["name"] == "n1" and cfg["log"]["level"] == "debug"
    assert cfg["smtp"]["allow_auth_without_tls"] is True
    assert {p: (home / p).read_bytes() for p in secrets_before} == secrets_before

    # a file that does not load is not silently replaced by defaults, even with --force
    cfg_file.write_text('[smtp]\nlisten = "nohostport"\n')
    rc, _, err = run(capsys, "init", "--home", str(home), "--force")
    assert rc == 1 and "cannot keep the values" in err
    assert cfg_file.read_text() == '[smtp]\nlisten = "nohostport"\n'


def test_init_force_on_an_installed_home_rewrites_the_linked_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """deploy/install.sh keeps the file in /etc/mailrelay and links it from the home: the link stays."""
    home, etc = tmp_path / "home", tmp_path / "etc"
    assert run(capsys, "init", "--home", str(home), "--smtp", "127.0.0.1:2601", "--no-delivery")[0] == 0
    etc.mkdir()
    (home / "mailrelay.toml").rename(etc / "mailrelay.toml")
    (home / "mailrelay.toml").symlink_to(etc / "mailrelay.toml")
    assert run(capsys, "init", "--home", str(home), "--force", "--smtp", "127.0.0.1:2611")[0] == 0
    assert (home / "mailrelay.toml").is_symlink()
    assert tomllib.loads((etc / "mailrelay.toml").read_text())["smtp"]["listen"] == "127.0.0.1:2611"


def test_config_check_redacts_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert run(capsys, "init", "--home", str(home), "--http", "127.0.0.1:2602", "--no-delivery")[0] == 0
    token = _toml(home)["http"]["admin_token"]
    cfg_file = home / "mailrelay.toml"
    cfg_file.write_text(cfg_file.read_text().replace('# url = ""', 'url = "postgresql://mail:s3cret@db/mailrelay"'))
    rc, out, _ = run(capsys, "config", "check", "--home", str(home))
    assert rc == 0
    lines = out.splitlines()
    assert 'http.admin_token = "<redacted>"' in lines
    assert 'storage.url = "postgresql://mail:<redacted>@db/mailrelay"' in lines
    assert 'delivery.verp_secret_file = "verp.key"' in lines  # a path, not a secret
    assert str(token) not in out and "s3cret" not in out


def test_commands_naming_an_unknown_account_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert run(capsys, "init", "--home", str(home), "--no-delivery")[0] == 0
    h = ("--home", str(home))
    listfile = tmp_path / "list.txt"
    listfile.write_text("a@example.com\n")
    for argv in (
        ("suppression", "add", "--list", "block", "a@example.com"),
        ("suppression", "remove", "--list", "block", "a@example.com"),
        ("suppression", "list", "--list", "block"),
        ("suppression", "import", "--list", "block", str(listfile), "--no-progress"),
        ("exports", "create"),
        ("exports", "list"),
        ("status", "search"),
        ("queues", "list"),
        ("users", "list"),
    ):
        rc, out, err = run(capsys, *argv, "--account", "nosuch", *h)
        assert (rc, out, err) == (1, "", NOSUCH), argv
    rc, _, err = run(capsys, "queues", "pause", "--api-user", "nosuch", "--domain", "example.com", *h)
    assert (rc, err) == (1, "mailrelay: no such API_USER: 'nosuch'\n")
    # none of that created the account; `users add` does
    assert run(capsys, "status", "search", "--account", "nosuch", *h)[2] == NOSUCH
    assert run(capsys, "users", "add", "app1", "--account", "nosuch", "--key", KEY, *h)[0] == 0
    assert run(capsys, "suppression", "add", "--list", "block", "a@example.com", "--account", "nosuch", *h)[0] == 0


def test_version_is_the_package_version() -> None:
    r = _process("--version")
    version = importlib.metadata.version("mailrelay")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert version == pyproject["project"]["version"]
    assert (r.returncode, r.stdout, r.stderr) == (0, f"mailrelay {version}\n", "")


def test_closed_stdout_is_no_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _process("init", "--home", str(home), "--no-delivery").returncode == 0
    r_fd, w_fd = os.pipe()
    os.close(r_fd)  # the reader is gone before the first line is written
    try:
        r = _process("config", "check", "--home", str(home), stdout=w_fd)
    finally:
        os.close(w_fd)
    assert (r.returncode, r.stderr) == (141, "")
    shell = subprocess.run(f"{sys.executable} -m relay config check --home {home} | head -1", shell=True,
                           capture_output=True, text=True, timeout=60)
    assert shell.stdout.count("\n") == 1 and shell.stderr == ""
    # started with stdout closed altogether (`>&-`): the error is still the one line it should be
    fd_closed = subprocess.run([sys.executable, "-m", "relay", "feedback", "classify", "/nonexistent.eml"],
                               stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(1))
    assert fd_closed.returncode == 1
    assert fd_closed.stderr == UNREADABLE


def test_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    readable = Path(__file__).resolve().parents[1] / "fixtures"
    eml = next(readable.rglob("*.eml"))
    r = _process("feedback", "classify", str(eml), "/nonexistent.eml")
    assert r.returncode == 1
    assert r.stdout.splitlines()[0].startswith(f"{eml}: ")  # the readable file is still reported
    assert r.stderr == UNREADABLE
    for argv in (("config", "check", "--home", str(tmp_path / "none")),
                 ("serve", "--home", str(tmp_path / "none")),
                 ("db", "status", "--home", str(tmp_path / "none"))):
        r = _process(*argv)
        assert r.returncode == 1 and r.stdout == "", argv
        assert r.stderr.startswith("mailrelay: ") and r.stderr.count("\n") == 1, r.stderr
