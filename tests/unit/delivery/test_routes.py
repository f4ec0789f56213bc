"""Relay host and transport map (Postfix style), planned against a real DNS server on loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from relay.delivery.mx import DnsPermFail, DnsTempFail, MxHost, MxPlan, MxResolver, NullMx
from relay.delivery.routes import Routes, plan_for
from relay.delivery.types import SiteKey
from tests.helpers.dns_server import LoopbackDns


@pytest.fixture
async def zone() -> AsyncIterator[LoopbackDns]:
    server = await LoopbackDns().start()
    # the recipient domains' own MX records, which routes must bypass
    for d in ("example.com", "sub.example.com", "deep.sub.example.com", "other.test", "relay.test"):
        server.add_mx(d, [(10, f"mx.{d}")])
        server.add_a(f"mx.{d}", "127.0.0.20")
    server.add_a("relay.test", "127.0.0.7")
    server.add_aaaa("relay.test", "::1")
    yield server
    server.stop()


@pytest.fixture
def resolver(zone: LoopbackDns) -> MxResolver:
    return MxResolver(nameservers=[zone.address], timeout=0.5, rng=random.Random(1))


# region route_for


def test_no_routes() -> None:
    r = Routes(None, {})
    assert r.empty
    assert r.route_for("example.com") is None


def test_relayhost_takes_every_domain() -> None:
    r = Routes(("smarthost.test", 587), {})
    assert r.route_for("example.com") == ("smarthost.test", 587)
    assert r.route_for("anything.else") == ("smarthost.test", 587)


def test_transport_exact_and_parent_match() -> None:
    r = Routes(None, {
        "example.com": ("exact.test", 25),
        ".example.com": ("subs.test", 2525),
        ".deep.sub.example.com": ("deeper.test", 26),
        "Other.TEST.": ("other-route.test", 25),
    })
    assert r.route_for("example.com") == ("exact.test", 25)
    assert r.route_for("EXAMPLE.com.") == ("exact.test", 25)
    assert r.route_for("sub.example.com") == ("subs.test", 2525)  # the exact entry does not match subdomains
    assert r.route_for("a.b.example.com") == ("subs.test", 2525)
    assert r.route_for("x.deep.sub.example.com") == ("deeper.test", 26)  # the closest parent wins
    assert r.route_for("deep.sub.example.com") == ("subs.test", 2525)  # ".d" does not match d itself
    assert r.route_for("other.test") == ("other-route.test", 25)  # keys are normalized
    assert r.route_for("notexample.com") is None  # a parent match is on a label boundary
    assert r.route_for("com") is None


def test_transport_wins_over_relayhost_and_wildcard() -> None:
    r = Routes(("smarthost.test", 25), {".example.com": ("subs.test", 25), "*": ("catchall.test", 25)})
    assert r.route_for("sub.example.com") == ("subs.test", 25)
    assert r.route_for("example.com") == ("catchall.test", 25)
    assert Routes(("smarthost.test", 25), {"example.com": ("x.test", 25)}).route_for("y.test") == (
        "smarthost.test", 25)


def test_idn_routes() -> None:
    r = Routes(None, {".bücher.example": ("idn.test", 25)})
    assert r.route_for("shop.BÜCHER.example") == ("idn.test", 25)
    assert r.route_for("shop.xn--bcher-kva.example") == ("idn.test", 25)


# endregion

# region plan_for


async def test_no_route_uses_mx_on_mx_port(zone: LoopbackDns, resolver: MxResolver) -> None:
    plan = await plan_for("example.com", resolver, Routes(None, {}), 2525)
    assert isinstance(plan, MxPlan)
    assert plan.hosts == (MxHost("mx.example.com", 10, ("127.0.0.20",)),)
    assert plan.site == SiteKey(("mx.example.com",), 2525)


async def test_relayhost_uses_address_records_not_mx(zone: LoopbackDns, resolver: MxResolver) -> None:
    routes = Routes(("relay.test", 2525), {})
    plan = await plan_for("Example.com", resolver, routes, 25)
    assert isinstance(plan, MxPlan)
    assert plan.domain == "example.com"
    assert plan.hosts == (MxHost("relay.test", 0, ("127.0.0.7", "::1")),)
    assert plan.site == SiteKey(("relay.test",), 2525)
    assert zone.count("relay.test", "MX") == 0
    assert zone.count("example.com") == 0
    other = await plan_for("other.test", resolver, routes, 25)
    assert isinstance(other, MxPlan) and other.site == plan.site  # one relay, one site
    assert other.domain == "other.test"
    assert zone.count("relay.test", "A") == 1  # cached


async def test_relayhost_ip_literal_needs_no_dns(zone: LoopbackDns, resolver: MxResolver) -> None:
    for host in ("127.0.0.9", "[127.0.0.9]"):
        plan = await plan_for("example.com", resolver, Routes((host, 2525), {}), 25)
        assert plan == MxPlan("example.com", SiteKey(("127.0.0.9",), 2525), (MxHost("127.0.0.9", 0, ("127.0.0.9",)),))
    plan6 = await plan_for("example.com", resolver, Routes(("::1", 2525), {}), 25)
    assert isinstance(plan6, MxPlan) and plan6.hosts[0].addresses == ("::1",)
    assert zone.queries == {}


async def test_transport_parent_match_routes_subdomains_only(zone: LoopbackDns, resolver: MxResolver) -> None:
    routes = Routes(None, {".example.com": ("relay.test", 2526)})
    sub = await plan_for("deep.sub.example.com", resolver, routes, 25)
    assert isinstance(sub, MxPlan) and sub.site == SiteKey(("relay.test",), 2526)
    assert zone.count("deep.sub.example.com") == 0
    top = await plan_for("example.com", resolver, routes, 25)
    assert isinstance(top, MxPlan) and top.site == SiteKey(("mx.example.com",), 25)


async def test_missing_relay_host_defers(zone: LoopbackDns, resolver: MxResolver) -> None:
    res = await plan_for("example.com", resolver, Routes(("typo.invalid", 25), {}), 25)
    assert isinstance(res, DnsTempFail)  # a configuration error must not bounce mail
    assert res.domain == "example.com"
    assert res.why == "relay host typo.invalid: typo.invalid does not exist (NXDOMAIN)"


async def test_relay_host_dns_timeout_defers(zone: LoopbackDns) -> None:
    zone.slow("relay.test", None)
    r = MxResolver(nameservers=[zone.address], timeout=0.3)
    res = await plan_for("example.com", r, Routes(("relay.test", 25), {}), 25)
    assert isinstance(res, DnsTempFail)
    assert "DNS timeout for relay.test" in res.why


async def test_unrouted_results_pass_through(zone: LoopbackDns, resolver: MxResolver) -> None:
    zone.null_mx("nomail.test")
    routes = Routes(None, {"example.com": ("relay.test", 25)})
    assert await plan_for("nomail.test", resolver, routes, 25) == NullMx("nomail.test")
    assert isinstance(await plan_for("nx.test", resolver, routes, 25), DnsPermFail)


async def test_bracketed_relay_host_name(zone: LoopbackDns, resolver: MxResolver) -> None:
    plan = await plan_for("example.com", resolver, Routes(("[Relay.Test]", 25), {}), 25)
    assert isinstance(plan, MxPlan) and plan.site == SiteKey(("relay.test",), 25)
    assert plan.hosts[0].addresses == ("127.0.0.7", "::1")


# endregion
