"""deploy/install.sh into a temporary root (a real venv, a real pip install of this checkout), the
installed program serving under systemd's protocol, and deploy/mailrelay.service through
`systemd-analyze verify`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.systemd_notify import serving
from tests.integration.delivery_harness import free_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
UNIT = ROOT / "deploy" / "mailrelay.service"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


def _install(root: Path, *init_options: str) -> subprocess.CompletedProcess[str]:
    args = [str(INSTALL), "--root", str(root)]
    if init_options:
        args += ["--", *init_options]
    return subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=root.parent)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("install") / "root"
    port = free_port("127.0.0.1")
    done = _install(root, "--smtp", f"127.0.0.1:{port}", "--no-delivery")
    assert done.returncode == 0, done.stdout + done.stderr
    return root, port


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


@pytest.mark.slow
def test_install_lays_out_the_program_the_data_and_the_configuration(installed: tuple[Path, int]) -> None:
    root, port = installed
    venv = root / "opt/mailrelay"
    data = root / "var/lib/mailrelay"
    etc = root / "etc/mailrelay"
    assert os.access(venv / "bin/mailrelay", os.X_OK)
    assert os.readlink(root / "usr/local/bin/mailrelay") == "/opt/mailrelay/bin/mailrelay"
    # a real (not editable) install: the installed interpreter imports its own copy of the code
    where = subprocess.run([str(venv / "bin/python"), "-c", "import relay; print(relay.__file__)"],
                           capture_output=True, text=True, cwd="/", check=True).stdout
    assert where.startswith(str(venv / "lib")), where
    assert _mode(data) == 0o750 and _mode(etc) == 0o750
    assert _mode(etc / "mailrelay.toml") == 0o640
    # the data directory's mailrelay.toml is a relative link to /etc/mailrelay/mailrelay.toml
    link = data / "mailrelay.toml"
    assert link.is_symlink() and os.readlink(link) == "../../../etc/mailrelay/mailrelay.toml"
    assert link.resolve() == (etc / "mailrelay.toml").resolve()
    assert f'listen = "127.0.0.1:{port}"' in (etc / "mailrelay.toml").read_text()  # the init options
    assert (data / "verp.key").is_file() and (data / "tls/cert.pem").is_file() and (data / "spool").is_dir()
    assert (root / "etc/systemd/system/mailrelay.service").read_text() == UNIT.read_text()
    # what the unit names exists once installed
    unit = UNIT.read_text()
    doc = re.search(r"^Documentation=file://(\S+)$", unit, re.M)
    assert doc and (root / doc.group(1).lstrip("/")).read_text() == (ROOT / "README.md").read_text()
    for exe in re.findall(r"^Exec(?:Start|StartPre)=(\S+)", unit, re.M):
        assert os.access(root / exe.lstrip("/"), os.X_OK), exe

    out = subprocess.run([str(venv / "bin/mailrelay"), "--help"], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and "serve" in out.stdout
    check = subprocess.run([str(venv / "bin/mailrelay"), "config", "check", "--home", str(data)],
                           capture_output=True, text=True, cwd="/")
    assert check.returncode == 0 and f'smtp.listen = "127.0.0.1:{port}"' in check.stdout, check.stderr


@pytest.mark.slow
def test_the_installed_program_serves_and_pings_the_watchdog(installed: tuple[Path, int], tmp_path: Path) -> None:
    root, port = installed
    command = [str(root / "opt/mailrelay/bin/mailrelay"), "serve", "--home", str(root / "var/lib/mailrelay")]
    with serving(command, tmp_path / "notify.sock", {"WATCHDOG_USEC": "400000"}) as (proc, notify):
        assert "READY=1" in notify.recv(timeout=30)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            assert c.recv(512).startswith(b"220 ")
        assert notify.recv() == "WATCHDOG=1"
        proc.terminate()
        assert notify.recv_skipping_pings() == "STOPPING=1"
        assert proc.wait(30) == 0


@pytest.mark.slow
def test_install_again_changes_no_configuration_or_data(installed: tuple[Path, int]) -> None:
    root, _port = installed
    cfg = root / "etc/mailrelay/mailrelay.toml"
    before = cfg.read_text(), (root / "var/lib/mailrelay/verp.key").read_text()
    stamp = time.time() - 3600
    os.utime(cfg, (stamp, stamp))
    again = _install(root, "--smtp", "127.0.0.1:2600")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "the init options are ignored" in again.stdout
    assert (cfg.read_text(), (root / "var/lib/mailrelay/verp.key").read_text()) == before
    assert cfg.stat().st_mtime == stamp  # not rewritten either
    assert (root / "var/lib/mailrelay/mailrelay.toml").is_symlink()


def _verify(unit_text: str, root: Path, where: Path) -> str:
    """`systemd-analyze verify` on the unit with its /opt/mailrelay paths pointing into ``root``:
    everything it prints (it exits 0 on an unknown directive, but names it)."""
    text = re.sub(r"^(Exec\w+=)/opt/mailrelay/", rf"\g<1>{root}/opt/mailrelay/", unit_text, flags=re.M)
    where.mkdir(exist_ok=True)
    (where / "mailrelay.service").write_text(text)
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(where / "mailrelay.service")],
                          capture_output=True, text=True, timeout=60)
    return f"rc={done.returncode} {done.stdout}{done.stderr}".strip()


@pytest.mark.slow
def test_systemd_analyze_accepts_the_unit(installed: tuple[Path, int], tmp_path: Path) -> None:
    root, _port = installed
    unit = UNIT.read_text()
    assert _verify(unit, root, tmp_path / "good") == "rc=0"
    # the check can fail: a typo'd directive, a missing binary, a bad value
    typo = unit.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    assert "Unknown key 'NoNewPrivilege'" in _verify(typo, root, tmp_path / "typo")
    missing = unit.replace("/opt/mailrelay/bin/mailrelay serve", "/opt/mailrelay/bin/mailrelayd serve")
    assert "not executable" in _verify(missing, root, tmp_path / "missing")
    bad = unit.replace("WatchdogSec=30s", "WatchdogSec=thirty")
    assert "Failed to parse sec value, ignoring: thirty" in _verify(bad, root, tmp_path / "bad")


def test_the_unit_has_the_required_settings() -> None:
    settings: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key] = value
    expected = {
        "Type": "notify", "User": "mailrelay", "Restart": "on-failure", "WatchdogSec": "30s",
        "ExecStart": "/opt/mailrelay/bin/mailrelay serve --home /var/lib/mailrelay",
        "ExecReload": "/bin/kill -HUP $MAINPID", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/mailrelay", "PrivateTmp": "yes", "ProtectHome": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "LockPersonality": "yes",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE", "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    }
    assert {k: settings.get(k) for k in expected} == expected
