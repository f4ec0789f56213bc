"""`mailrelay init --web --public-url` and `mailrelay accounts set|show` (SQLite; the settings'
storage is covered on both backends by tests/storage/test_recipient_conformance.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import run


def test_init_web_and_public_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = tmp_path / "home"
    rc, _, err = run(capsys, "init", "--home", str(h), "--no-delivery", "--web", "127.0.0.1:8089",
                       "--public-url", "https://links.example.com/")
    assert rc == 0, err
    text = (h / "mailrelay.toml").read_text()
    assert '[web]\n' in text and 'listen = "127.0.0.1:8089"' in text
    assert 'public_url = "https://links.example.com"' in text  # the trailing slash is dropped
    key = h / "web.key"
    assert key.stat().st_mode & 0o077 == 0 and len(bytes.fromhex(key.read_text().strip())) == 32
    rc, _, err = run(capsys, "init", "--home", str(tmp_path / "h2"), "--no-delivery",
                     "--public-url", "links.example.com")
    assert rc != 0 and "web.public_url" in err
    assert not (tmp_path / "h2" / "mailrelay.toml").exists()


def test_accounts_set_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = str(tmp_path / "home")
    assert run(capsys, "init", "--home", h, "--no-delivery")[0] == 0
    assert run(capsys, "users", "add", "app1", "--account", "acme", "--home", h)[0] == 0
    rc, out, _ = run(capsys, "accounts", "show", "acme", "--json", "--home", h)
    assert rc == 0 and json.loads(out) == {"account": "acme", "list_unsubscribe": True, "track_opens": False,
                                           "track_clicks": False}
    rc, out, _ = run(capsys, "accounts", "set", "acme", "--track-opens", "on", "--track-clicks", "on",
                     "--list-unsubscribe", "off", "--home", h)
    assert rc == 0 and "track-opens        on" in out and "list-unsubscribe   off" in out
    rc, out, _ = run(capsys, "accounts", "set", "acme", "--track-clicks", "off", "--home", h)
    rc, out, _ = run(capsys, "accounts", "show", "acme", "--json", "--home", h)
    assert json.loads(out) == {"account": "acme", "list_unsubscribe": False, "track_opens": True,
                               "track_clicks": False}
    rc, _, err = run(capsys, "accounts", "set", "acme", "--home", h)
    assert rc != 0 and "nothing to set" in err
    rc, _, err = run(capsys, "accounts", "show", "nobody", "--home", h)
    assert rc != 0 and "no such account" in err
    with pytest.raises(SystemExit):
        run(capsys, "accounts", "set", "acme", "--track-opens", "maybe", "--home", h)


def test_users_set_show_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = str(tmp_path / "home")
    assert run(capsys, "init", "--home", h, "--no-delivery")[0] == 0
    for user in ("app1", "app2"):
        assert run(capsys, "users", "add", user, "--account", "acme", "--home", h)[0] == 0
    assert run(capsys, "accounts", "set", "acme", "--track-opens", "on", "--home", h)[0] == 0
    rc, out, _ = run(capsys, "users", "show", "app1", "--home", h)
    assert rc == 0 and out.splitlines() == ["list-unsubscribe   on   (account)", "track-opens        on   (account)",
                                            "track-clicks       off  (account)"]
    rc, out, _ = run(capsys, "users", "set", "app1", "--track-opens", "off", "--list-unsubscribe", "off",
                     "--home", h)
    assert rc == 0 and "track-opens        off  (API_USER)" in out and "list-unsubscribe   off  (API_USER)" in out
    rc, out, _ = run(capsys, "users", "show", "app1", "--json", "--home", h)
    assert json.loads(out) == {"api_user": "app1", "account": "acme", "list_unsubscribe": False, "track_opens": False,
                               "track_clicks": False, "overrides": {"list_unsubscribe": False, "track_opens": False,
                                                                    "track_clicks": None}}
    assert run(capsys, "users", "set", "app1", "--track-opens", "inherit", "--home", h)[0] == 0
    rc, out, _ = run(capsys, "users", "list", "--json", "--home", h)
    rows = {r["api_user"]: r for r in map(json.loads, out.splitlines())}
    assert rows["app1"]["track_opens"] is True and rows["app1"]["overrides"]["track_opens"] is None
    assert rows["app1"]["list_unsubscribe"] is False and rows["app1"]["active"] is True
    assert rows["app2"]["overrides"] == {"list_unsubscribe": None, "track_opens": None, "track_clicks": None}
    rc, _, err = run(capsys, "users", "set", "app1", "--home", h)
    assert rc != 0 and "nothing to set" in err
    rc, _, err = run(capsys, "users", "show", "nobody", "--home", h)
    assert rc != 0 and "no such API_USER" in err
    with pytest.raises(SystemExit):
        run(capsys, "users", "set", "app1", "--track-opens", "maybe", "--home", h)
