"""Storage conformance for DKIM keys (both backends): add, list (newest first, with the account's
name), uniqueness of (domain, selector), remove."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage import SqlStorage
from storage.errors import Conflict
from storage.records import DkimAlgorithm, DkimKey
from tests.storage.test_conformance import T0

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"


async def test_dkim_keys_add_list_remove(storage: SqlStorage) -> None:
    acme = await storage.accounts.ensure_account("acme")
    k1 = DkimKey("acme.example", "mr202611", DkimAlgorithm.RSA, PEM, "MIIBIjAN", T0)
    k2 = DkimKey("acme.example", "mr202612", DkimAlgorithm.ED25519, "c2VlZA==", "cHVi", T0 + timedelta(days=30),
                 account_id=acme.id)
    k3 = DkimKey("other.example", "s1", DkimAlgorithm.RSA, PEM, "MIIB", T0 + timedelta(days=1))
    assert await storage.dkim.add(k1) == k1
    got2 = await storage.dkim.add(k2)
    assert got2.account_name == "acme" and got2.account_id == acme.id and got2.private_key == "c2VlZA=="
    await storage.dkim.add(k3)

    everything = await storage.dkim.list()
    assert [(k.domain, k.selector) for k in everything] == [
        ("acme.example", "mr202612"), ("other.example", "s1"), ("acme.example", "mr202611")]  # newest first
    assert everything[0].algorithm is DkimAlgorithm.ED25519 and everything[0].created_at == k2.created_at
    assert [k.selector for k in await storage.dkim.list("acme.example")] == ["mr202612", "mr202611"]
    assert await storage.dkim.list("nope.example") == []

    with pytest.raises(Conflict):  # one (domain, selector) holds one key: a rotation takes a new selector
        await storage.dkim.add(DkimKey("acme.example", "mr202611", DkimAlgorithm.RSA, PEM, "x", T0))
    assert (await storage.dkim.list("acme.example"))[1] == k1  # unchanged by the refused insert

    assert await storage.dkim.remove("acme.example", "mr202611") is True
    assert await storage.dkim.remove("acme.example", "mr202611") is False
    assert [k.selector for k in await storage.dkim.list()] == ["mr202612", "s1"]
