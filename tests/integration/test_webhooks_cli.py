"""`mailrelay webhooks add|list|show|remove|enable` as an operator uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    h = tmp_path / "home"
    assert run(capsys, "init", "--home", str(h), "--smtp", "127.0.0.1:0", "--no-delivery")[0] == 0
    assert run(capsys, "users", "add", "app1", "--account", "acme", "--home", str(h))[0] == 0
    return h


def allow_private(home: Path) -> None:
    conf = home / "mailrelay.toml"
    conf.write_text(conf.read_text().replace("# allow_private_addresses = false", "allow_private_addresses = true"))


def test_private_destinations_are_refused_unless_allowed(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = ("--home", str(home))
    for url, why in (("http://127.0.0.1:8080/x", "127.0.0.1 is a loopback address"),
                     ("http://10.1.2.3/x", "10.1.2.3 is a private address"),
                     ("http://[::1]/x", "::1 is a loopback address"),
                     ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
                     ("http://2130706433/x", "127.0.0.1 is a loopback address"),
                     ("http://localhost:8080/x", "localhost is a loopback name")):
        rc, _, err = run(capsys, "webhooks", "add", "--account", "acme", url, *h)
        assert rc != 0 and f"url: {why}: webhooks may only POST to public addresses" in err, (url, err)
    rc, _, err = run(capsys, "webhooks", "add", "--account", "acme", "https://user:pw@hooks.example/x", *h)
    assert rc != 0 and "url: no user:password@ in the URL" in err
    allow_private(home)
    rc, out, _ = run(capsys, "webhooks", "add", "--account", "acme", "http://127.0.0.1:8080/x", *h)
    assert rc == 0 and "added webhook" in out


def test_add_list_show_remove(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = ("--home", str(home))
    allow_private(home)  # one of its webhooks is on 127.0.0.1
    rc, out, _ = run(capsys, "webhooks", "add", "--account", "acme", "https://hooks.example/mail",
                     "--events", "delivered,complaint;soft_bounce", *h)
    assert rc == 0, out
    lines = out.strip().splitlines()
    assert lines[0].startswith("added webhook 1 for account acme: https://hooks.example/mail")
    assert "events: delivered,report,soft_bounce" in lines[0]
    assert lines[1] == "id: 1" and lines[2].startswith("secret: ") and len(lines[2]) > 8 + 32
    rc, out, _ = run(capsys, "webhooks", "add", "--account", "acme", "http://127.0.0.1:8080/all", "--batch", "10",
                     "--secret", "given-secret-0123456789", "--signature", "engagelab", *h)
    assert rc == 0 and out.strip().splitlines()[-1] == "secret: given-secret-0123456789"

    rc, out, _ = run(capsys, "webhooks", "list", *h)
    assert rc == 0
    rows = out.strip().splitlines()
    assert rows[0].split() == ["ID", "ACCOUNT", "STATE", "PENDING", "SENT", "URL"]
    assert rows[1].split() == ["1", "acme", "active", "0", "0", "https://hooks.example/mail"]
    rc, out, _ = run(capsys, "webhooks", "list", "--account", "acme", "--json", *h)
    docs = [json.loads(x) for x in out.strip().splitlines()]
    assert [d["id"] for d in docs] == [1, 2] and docs[1]["batch"] == 10 and len(docs[1]["events"]) == 8
    assert [d["signature"] for d in docs] == ["body", "engagelab"]
    assert "secret" not in docs[0] and docs[0]["disabled_reason"] is None

    rc, out, _ = run(capsys, "webhooks", "show", "1", *h)
    assert rc == 0 and "state:" in out and "disabled_reason:" in out and "attempts (last 0, newest first):" in out
    rc, out, _ = run(capsys, "webhooks", "show", "2", "--json", *h)
    assert json.loads(out)["attempts"] == [] and json.loads(out)["url"] == "http://127.0.0.1:8080/all"

    assert run(capsys, "webhooks", "remove", "1", *h)[:2] == (0, "removed webhook 1\n")
    rc, _, err = run(capsys, "webhooks", "remove", "1", *h)
    assert rc == 1 and err == "mailrelay: no webhook 1\n"
    rc, _, err = run(capsys, "webhooks", "show", "99", *h)
    assert rc == 1 and err == "mailrelay: no webhook 99\n"
    assert run(capsys, "webhooks", "enable", "2", *h)[:2] == (0, "enabled webhook 2\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["ftp://x.example/"], "url: 'ftp://x.example/' is not an http:// or https:// URL with a host"),
    (["http:///nohost"], "is not an http:// or https:// URL with a host"),
    (["http://x.example:99999/"], "has an invalid port"),
    (["http://x.example/", "--events", "delivered,bogus"], "events: unknown event 'bogus'"),
    (["http://x.example/", "--batch", "0"], "batch: events per POST"),
    (["http://x.example/", "--secret", "short"], "secret: at least 16 characters"),
])
def test_add_refuses_bad_input(home: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                               message: str) -> None:
    rc, out, err = run(capsys, "webhooks", "add", "--account", "acme", *argv, "--home", str(home))
    assert rc == 1 and out == "" and err.startswith("mailrelay: ") and message in err


def test_add_to_an_unknown_account(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "webhooks", "add", "--account", "nope", "http://x.example/", "--home", str(home))
    assert rc == 1 and "no such account: 'nope'" in err
