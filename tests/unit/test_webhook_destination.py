"""Which webhook destinations are public (relay/webhook_destination.py): address literals in every
form the system resolver accepts, and the send-time resolver that drops non-public answers."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from relay.webhook_destination import DestinationRefused, PublicOnlyResolver, check_host, literal, why_not_public
from relay.webhook_json import WebhookInputError, check_url


@pytest.mark.parametrize(("host", "why"), [
    ("127.0.0.1", "a loopback address"), ("127.8.9.10", "a loopback address"), ("::1", "a loopback address"),
    ("10.0.0.1", "a private address"), ("172.16.5.4", "a private address"), ("192.168.1.1", "a private address"),
    ("fd00::1", "a private address"), ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
    ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"), ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"), ("::ffff:10.1.2.3", "a private address"), ("100.64.0.1", "not a public address"),
    ("240.0.0.1", "a reserved address"),
])
def test_non_public_addresses(host: str, why: str) -> None:
    assert why_not_public(ipaddress.ip_address(host)) == why


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700::1111", "93.184.216.34"])
def test_public_addresses(host: str) -> None:
    assert why_not_public(ipaddress.ip_address(host)) is None
    check_host(host)


@pytest.mark.parametrize(("host", "ip"), [("2130706433", "127.0.0.1"), ("127.1", "127.0.0.1"),
                                          ("0x7f.0.0.1", "127.0.0.1"), ("017700000001", "127.0.0.1"),
                                          ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1")])
def test_literals_in_every_form(host: str, ip: str) -> None:
    assert literal(host) == ipaddress.ip_address(ip)
    with pytest.raises(DestinationRefused):
        check_host(host)


def test_names_are_not_literals() -> None:
    assert literal("hooks.example.com") is None and literal("1.example") is None
    for name in ("localhost", "LOCALHOST.", "api.localhost"):
        with pytest.raises(DestinationRefused, match="is a loopback name"):
            check_host(name)


def test_check_url() -> None:
    assert check_url("https://hooks.example.com/x?a=1") == "https://hooks.example.com/x?a=1"
    assert check_url("http://127.0.0.1:8080/x", allow_private=True) == "http://127.0.0.1:8080/x"
    with pytest.raises(WebhookInputError, match=r"url: 127\.0\.0\.1 is a loopback address: webhooks may only POST"):
        check_url("http://127.0.0.1:8080/x")
    with pytest.raises(WebhookInputError, match="no user:password@"):
        check_url("https://u:p@hooks.example.com/", allow_private=True)
    with pytest.raises(WebhookInputError, match="at most 2000 characters"):
        check_url("https://hooks.example.com/" + "a" * 2000)
    with pytest.raises(WebhookInputError, match="is not a valid URL"):
        check_url("http://[::1/x")


class _Answers(AbstractResolver):
    """Stands in for DNS: what a rebinding name resolves to at the moment of the POST."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                              proto=0, flags=0) for a in self.answers[host]]

    async def close(self) -> None:
        pass


async def test_resolver_keeps_public_answers_only() -> None:
    r = PublicOnlyResolver(_Answers({"mixed.example": ["10.0.0.5", "93.184.216.34"],
                                     "rebound.example": ["127.0.0.1", "::1"]}))
    assert [x["host"] for x in await r.resolve("mixed.example", 443)] == ["93.184.216.34"]
    with pytest.raises(DestinationRefused, match=r"rebound.example resolves only to non-public addresses "
                                                 r"\(127.0.0.1, ::1\)"):
        await r.resolve("rebound.example", 80)
    with pytest.raises(DestinationRefused):
        await r.resolve("localhost", 80)
