from __future__ import annotations

import secrets
import time

import pytest

from relay.ids import is_email_id, new_email_id
from relay.keys import DUMMY_HASH, generate_key, hash_key, verify_key


def test_email_ids_sort_by_time_and_are_unique() -> None:
    a = new_email_id(1_000)
    b = new_email_id(2_000)
    assert a < b and is_email_id(a)
    assert len({new_email_id() for _ in range(1000)}) == 1000


def test_key_hash_verifies_only_the_key() -> None:
    key = generate_key()
    h = hash_key(key, n=2**10)
    assert h.startswith("scrypt$") and key not in h
    assert verify_key(key, h)
    assert not verify_key(key + "x", h)
    assert not verify_key(key, "garbage")
    assert not verify_key(key, DUMMY_HASH)


def test_unknown_user_costs_a_real_scrypt() -> None:
    t = time.perf_counter()
    verify_key("whatever", DUMMY_HASH)
    assert time.perf_counter() - t > 0.005  # the dummy path is not a shortcut


def test_generated_keys_never_start_with_a_dash() -> None:
    keys = [generate_key() for _ in range(20_000)]  # about 300 would start with "-" if nothing prevented it
    assert not [k for k in keys if k.startswith("-")]
    assert len({k[0] for k in keys}) == 63  # the rest of the URL-safe alphabet still opens keys
    assert len(set(keys)) == len(keys) and all(len(k) == 43 for k in keys)


def test_a_key_drawn_with_a_leading_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-looks-like-an-option", "_fine-key"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert generate_key() == "_fine-key"
