"""Link and mailbox tokens: round trip, tampering, kinds, expiry, key rotation, size bounds; the
privacy-proxy check of opens; the per-message opt-out headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import tokens
from relay.config import ConfigError, config_from_dict
from relay.headers import process_headers
from relay.ids import new_email_id
from relay.tokens import LinkKind, LinkToken
from relay.web.machine import is_machine_open

K1, K2 = b"\x01" * 32, b"\x02" * 32
NOW = 1_800_000_000


def tok(kind: LinkKind = LinkKind.CLICK, link: str = "https://shop.example/a?b=1&c=%20") -> LinkToken:
    return LinkToken(kind, new_email_id(), "Ann@Example.test", "app1", NOW, link if kind is LinkKind.CLICK else "")


def dec(text: str, kind: LinkKind = LinkKind.CLICK, keys: tuple[bytes, ...] = (K1,), now: float = NOW,
        max_age: float = 86400) -> LinkToken | None:
    return tokens.decode(text, keys, kind, now=now, max_age=max_age)


def test_round_trip_each_kind_and_rotation() -> None:
    for kind in LinkKind:
        t = tok(kind)
        text = tokens.encode(t, K1)
        assert dec(text, kind) == t
        assert dec(text, kind, keys=(K2, K1)) == t  # an older key still verifies after a rotation
        assert dec(text, kind, keys=(K2,)) is None  # a foreign key: nothing
        for other in LinkKind:
            if other is not kind:
                assert dec(text, other) is None  # an open token is no click token


def test_tampering_expiry_and_size() -> None:
    text = tokens.encode(tok(), K1)
    body, _, mac = text.partition(".")
    for i in range(0, len(body), 7):
        flipped = body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1:]
        assert dec(f"{flipped}.{mac}") is None
    assert dec(text[:-1]) is None and dec(text + "A") is None and dec("") is None
    for last in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        assert last == text[-1] or dec(text[:-1] + last) is None  # no second spelling of the MAC
    assert dec(text, now=NOW + 86401) is None  # expired
    assert dec(text, now=NOW - 3600) is None  # issued in the future
    assert dec("A" * 5000 + "." + "B" * 22) is None
    assert dec("../../etc/passwd") is None and dec("x' OR 1=1 --.aaaaaaaaaaaaaaaaaaaaaa") is None


def test_mailto_local_part() -> None:
    eid = new_email_id()
    local = tokens.mailto_local(eid, "Ann@Example.test", K1)
    assert len(local) <= 64 and local.startswith("unsub-")
    assert tokens.decode_mailto(local, [K1]) is not None
    assert tokens.decode_mailto(local.upper(), [K2, K1]) is not None  # case-insensitive, rotated keys
    assert tokens.decode_mailto(local, [K2]) is None
    assert tokens.decode_mailto(local[:-1] + ("a" if local[-1] != "a" else "b"), [K1]) is None
    with pytest.raises(ValueError):
        tokens.mailto_local("not-an-id", "a@b", K1)


def test_machine_opens() -> None:
    assert is_machine_open("17.58.100.1", "Mozilla/5.0")  # Apple Mail Privacy Protection
    assert is_machine_open("::ffff:17.1.2.3", "Mozilla/5.0")
    assert is_machine_open("66.249.84.1", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
                                          "(via ggpht.com GoogleImageProxy)")
    assert not is_machine_open("198.51.100.7", "Mozilla/5.0 (iPhone)")
    assert not is_machine_open("not-an-ip", "")


def test_public_url_is_validated() -> None:
    web = {"listen": "127.0.0.1:8080", "public_url": "https://links.example.com/t"}
    ok = config_from_dict({"web": web}, home=Path("."))
    assert ok.web.public_url == "https://links.example.com/t"
    for bad in ("links.example.com", "https://links.example.com/", "javascript:alert(1)",
                "https://x.example/?q=1", "https://x.example/#f", "ftp://x.example"):
        with pytest.raises(ConfigError, match=r"web\.public_url"):
            config_from_dict({"web": {"public_url": bad}}, home=Path("."))
    with pytest.raises(ConfigError, match=r"web\.public_url is empty"):
        config_from_dict({"web": {"listen": "127.0.0.1:8080"}}, home=Path("."))


def test_opt_out_headers_are_read_and_removed() -> None:
    block = (b"From: a@b.example\r\nX-Mailrelay-Track: OFF\r\nX-Mailrelay-Unsubscribe: off\r\n"
             b"Subject: hi\r\n\r\n")
    out, facts = process_headers(block, ("X-Label",), ("X-Email-Type",))
    assert out == b"From: a@b.example\r\nSubject: hi\r\n\r\n"
    assert facts.opt_out == ("opens", "clicks", "list-unsubscribe")
    out, facts = process_headers(b"X-Mailrelay-Track: on\r\nSubject: hi\r\n\r\n", (), ())
    assert out == b"Subject: hi\r\n\r\n" and facts.opt_out == ()
