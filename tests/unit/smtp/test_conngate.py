from __future__ import annotations

from relay.smtp.conngate import ConnectionGate
from relay.smtp.verbs import parse_params, split_path


def test_gate_counts_per_ip() -> None:
    gate = ConnectionGate(2)
    assert gate.try_acquire("1.1.1.1")
    assert gate.try_acquire("1.1.1.1")
    assert not gate.try_acquire("1.1.1.1")
    assert gate.try_acquire("2.2.2.2")
    assert gate.total == 3
    gate.release("1.1.1.1")
    assert gate.count("1.1.1.1") == 1
    assert gate.try_acquire("1.1.1.1")
    gate.release("2.2.2.2")
    assert gate.count("2.2.2.2") == 0


def test_gate_unlimited() -> None:
    gate = ConnectionGate(0)
    assert all(gate.try_acquire("::1") for _ in range(1000))


def test_split_path() -> None:
    assert split_path("<a@b.c>") == ("a@b.c", "")
    assert split_path("<> SIZE=10") == ("", "SIZE=10")
    assert split_path('<"a>b"@c> BODY=8BITMIME') == ('"a>b"@c', "BODY=8BITMIME")
    assert split_path("a@b.c SIZE=1") == ("a@b.c", "SIZE=1")
    assert split_path("<a@b.c") is None
    assert split_path("<a@b.c>SIZE=1") is None
    assert split_path("") is None


def test_parse_params() -> None:
    assert parse_params("size=10 body=8bitmime SMTPUTF8") == {"SIZE": "10", "BODY": "8bitmime", "SMTPUTF8": True}
    assert parse_params("AUTH=<>  MT-PRIORITY=3") == {"AUTH": "<>", "MT-PRIORITY": "3"}
    assert parse_params("SIZE=") is None
    assert parse_params("-X=1") is None
    assert parse_params("A=b=c") is None
    assert parse_params("A=\x01") is None
