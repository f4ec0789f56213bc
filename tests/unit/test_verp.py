"""The signed VERP return path: round trip, tampering, case, length, key rotation."""

from __future__ import annotations

import pytest

from relay import verp
from relay.ids import new_email_id

SECRET = b"k" * 32
EID = new_email_id(now_ms=1_700_000_000_000)
RCPT = "Someone.Long+Tag@Example.ORG"


def _tamper(addr: str, group: int) -> str:
    local, domain = addr.split("@")
    parts = local.split("-")
    s = parts[group]
    parts[group] = s[:-1] + ("a" if s[-1] != "a" else "b")
    return "-".join(parts) + "@" + domain


def test_round_trip() -> None:
    addr = verp.encode(EID, RCPT, "bounces.example.net", SECRET)
    assert addr.endswith("@bounces.example.net") and addr.startswith("b-")
    tok = verp.decode(addr, SECRET)
    assert tok == verp.VerpToken(EID, verp.recipient_hash(RCPT))


def test_local_part_length_and_alphabet() -> None:
    local = verp.encode(EID, "x" * 300 + "@example.org", "d.example", SECRET).split("@")[0]
    assert len(local) <= 64
    assert local == local.lower()
    assert len(local) == 2 + 26 + 1 + 8 + 1 + 16


def test_recipient_hash_is_case_and_space_insensitive_and_40_bits() -> None:
    h = verp.recipient_hash(RCPT)
    assert h == verp.recipient_hash(" someone.long+tag@example.org ")
    assert len(h) == 8 and h != verp.recipient_hash("other@example.org")


def test_each_recipient_gets_its_own_address() -> None:
    a = verp.encode(EID, "a@example.org", "d.example", SECRET)
    b = verp.encode(EID, "b@example.org", "d.example", SECRET)
    assert a != b
    assert verp.encode(EID, "A@EXAMPLE.ORG", "d.example", SECRET) == a


@pytest.mark.parametrize("group", [1, 2, 3], ids=["email_id", "recipient_hash", "hmac"])
def test_tampered_parts_are_rejected(group: int) -> None:
    addr = verp.encode(EID, RCPT, "d.example", SECRET)
    assert verp.decode(_tamper(addr, group), SECRET) is None


def test_swapping_parts_between_valid_addresses_is_rejected() -> None:
    other = new_email_id(now_ms=1_700_000_000_001)
    a = verp.encode(EID, "a@example.org", "d.example", SECRET).split("-")
    b = verp.encode(other, "b@example.org", "d.example", SECRET).split("-")
    assert verp.decode("-".join([a[0], b[1], a[2], a[3]]), SECRET) is None  # another message
    assert verp.decode("-".join([a[0], a[1], b[2], a[3]]), SECRET) is None  # another recipient


def test_domain_is_irrelevant_and_brackets_accepted() -> None:
    addr = verp.encode(EID, RCPT, "d.example", SECRET)
    local = addr.split("@")[0]
    assert verp.decode(f"<{local}@other.example>", SECRET) is not None


def test_upper_cased_address_still_verifies() -> None:
    addr = verp.encode(EID, RCPT, "d.example", SECRET)
    tok = verp.decode(addr.upper(), SECRET)
    assert tok is not None and tok.email_id == EID


def test_wrong_key_and_rotation() -> None:
    old, new = b"old-secret", b"new-secret"
    addr = verp.encode(EID, RCPT, "d.example", old)
    assert verp.decode(addr, new) is None
    assert verp.decode(addr, [new, old]) is not None
    assert verp.decode(addr, []) is None
    assert verp.decode(addr, [b""]) is None


@pytest.mark.parametrize(
    "addr",
    [
        "",
        "postmaster@d.example",
        "no-at-sign",
        "b-abc-def-ghi@d.example",
        "x" + "-" * 3 + "@d.example",
        "b-" + "u" * 26 + "-aaaaaaaa-" + "a" * 16 + "@d.example",  # 'u' is not Crockford base32
    ],
)
def test_not_ours(addr: str) -> None:
    assert verp.decode(addr, SECRET) is None


def test_encode_validates_inputs() -> None:
    with pytest.raises(ValueError, match="email_id"):
        verp.encode("not-an-id", RCPT, "d.example", SECRET)
    with pytest.raises(ValueError, match="secret"):
        verp.encode(EID, RCPT, "d.example", b"")
    with pytest.raises(ValueError, match="domain"):
        verp.encode(EID, RCPT, "", SECRET)
    assert verp.decode(verp.encode(EID.lower(), RCPT, "d.example", SECRET), SECRET) is not None
