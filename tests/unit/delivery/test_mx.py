"""MxResolver against a real DNS server on loopback (UDP, TCP for large answers). No patching."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from relay.delivery.mx import (
    DnsPermFail,
    DnsTempFail,
    MxHost,
    MxPlan,
    MxResolver,
    NullMx,
    normalize_domain,
    site_for_literal,
)
from relay.delivery.types import SiteKey
from tests.helpers.dns_server import LoopbackDns


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def zone() -> AsyncIterator[LoopbackDns]:
    server = await LoopbackDns().start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def resolver(zone: LoopbackDns, clock: FakeClock | None = None, seed: int = 1, timeout: float = 1.0) -> MxResolver:
    return MxResolver(nameservers=[zone.address], timeout=timeout, clock=clock or FakeClock(),
                      rng=random.Random(seed))


def names(plan: object) -> list[str]:
    assert isinstance(plan, MxPlan), plan
    return [h.name for h in plan.hosts]


# region order


async def test_ascending_preference(zone: LoopbackDns) -> None:
    zone.add_mx("example.com", [(30, "mx3.example.com"), (10, "MX1.Example.com"), (20, "mx2.example.com")])
    for i in (1, 2, 3):
        zone.add_a(f"mx{i}.example.com", f"127.0.0.{i + 1}")
    plan = await resolver(zone).resolve("example.com")
    assert isinstance(plan, MxPlan)
    assert plan.domain == "example.com"
    assert plan.hosts == (
        MxHost("mx1.example.com", 10, ("127.0.0.2",)),
        MxHost("mx2.example.com", 20, ("127.0.0.3",)),
        MxHost("mx3.example.com", 30, ("127.0.0.4",)),
    )
    assert plan.site == SiteKey(("mx1.example.com", "mx2.example.com", "mx3.example.com"), 25)
    assert not plan.implicit
    assert "mx1.example.com(10)" in plan.why


async def test_equal_preference_is_shuffled(zone: LoopbackDns) -> None:
    zone.add_mx("eq.test", [(10, "a.eq.test"), (10, "b.eq.test"), (5, "first.eq.test"), (20, "last.eq.test")])
    for n in ("a", "b", "first", "last"):
        zone.add_a(f"{n}.eq.test", "127.0.0.2")
    seen = set()
    for seed in range(20):
        order = names(await resolver(zone, seed=seed).resolve("eq.test"))
        assert order[0] == "first.eq.test" and order[-1] == "last.eq.test"
        seen.add(tuple(order[1:3]))
    assert seen == {("a.eq.test", "b.eq.test"), ("b.eq.test", "a.eq.test")}


async def test_cached_plan_is_reshuffled_each_call(zone: LoopbackDns) -> None:
    zone.add_mx("eq.test", [(10, "a.eq.test"), (10, "b.eq.test")])
    zone.add_a("a.eq.test", "127.0.0.2")
    zone.add_a("b.eq.test", "127.0.0.3")
    r = resolver(zone, seed=7)
    orders = {tuple(names(await r.resolve("eq.test"))) for _ in range(20)}
    assert len(orders) == 2
    assert zone.count("eq.test", "MX") == 1


async def test_ipv4_first_then_ipv6(zone: LoopbackDns) -> None:
    zone.add_mx("dual.test", [(10, "mx.dual.test")])
    zone.add_aaaa("mx.dual.test", "::1")
    zone.add_a("mx.dual.test", "127.0.0.2")
    zone.add_a("mx.dual.test", "127.0.0.3")
    plan = await resolver(zone).resolve("dual.test")
    assert isinstance(plan, MxPlan)
    assert plan.hosts[0].addresses == ("127.0.0.2", "127.0.0.3", "::1")


async def test_ipv6_only_host(zone: LoopbackDns) -> None:
    zone.add_mx("v6.test", [(10, "mx.v6.test")])
    zone.add_aaaa("mx.v6.test", "0:0::1")
    plan = await resolver(zone).resolve("v6.test")
    assert isinstance(plan, MxPlan)
    assert plan.hosts[0].addresses == ("::1",)


async def test_mx_host_through_cname(zone: LoopbackDns) -> None:
    zone.add_mx("cn.test", [(10, "alias.cn.test")])
    zone.add_cname("alias.cn.test", "real.cn.test")
    zone.add_a("real.cn.test", "127.0.0.4")
    plan = await resolver(zone).resolve("cn.test")
    assert isinstance(plan, MxPlan)
    assert plan.hosts == (MxHost("alias.cn.test", 10, ("127.0.0.4",)),)


async def test_large_answer_falls_back_to_tcp(zone: LoopbackDns) -> None:
    zone.add_mx("big.test", [(10, "mx.big.test")])
    for i in range(80):
        zone.add_a("mx.big.test", f"127.0.1.{i}")
    plan = await resolver(zone).resolve("big.test")
    assert isinstance(plan, MxPlan)
    assert len(plan.hosts[0].addresses) == 80
    assert zone.count("mx.big.test", "A") == 2  # truncated over UDP, then TCP


# endregion

# region implicit MX, null MX, missing hosts


async def test_implicit_mx(zone: LoopbackDns) -> None:
    zone.add_a("implicit.test", "127.0.0.5")
    zone.add_aaaa("implicit.test", "::1")
    plan = await resolver(zone).resolve("implicit.test", port=2525)
    assert isinstance(plan, MxPlan)
    assert plan.implicit
    assert plan.hosts == (MxHost("implicit.test", 0, ("127.0.0.5", "::1")),)
    assert plan.site == SiteKey(("implicit.test",), 2525)
    assert "implicit MX" in plan.why


async def test_no_mx_and_no_address_is_permanent(zone: LoopbackDns) -> None:
    zone.add_txt("parked.test", "v=spf1 -all")
    res = await resolver(zone).resolve("parked.test")
    assert isinstance(res, DnsPermFail)
    assert res.why == "parked.test has no MX and no A/AAAA records"


async def test_null_mx(zone: LoopbackDns) -> None:
    zone.null_mx("nomail.test")
    zone.add_a("nomail.test", "127.0.0.5")  # an address must not turn into an implicit MX
    res = await resolver(zone).resolve("nomail.test")
    assert res == NullMx("nomail.test")
    assert isinstance(res, NullMx)
    assert "null MX (RFC 7505)" in res.why
    assert zone.count("nomail.test", "A") == 0


async def test_null_mx_next_to_real_mx_is_ignored(zone: LoopbackDns) -> None:
    zone.add_mx("mixed.test", [(0, "."), (10, "mx.mixed.test")])
    zone.add_a("mx.mixed.test", "127.0.0.2")
    assert names(await resolver(zone).resolve("mixed.test")) == ["mx.mixed.test"]


async def test_hosts_without_address_are_skipped(zone: LoopbackDns) -> None:
    zone.add_mx("part.test", [(5, "gone.part.test"), (10, "empty.part.test"), (20, "ok.part.test")])
    zone.add_txt("empty.part.test", "exists but has no address")
    zone.add_a("ok.part.test", "127.0.0.2")
    plan = await resolver(zone).resolve("part.test")
    assert isinstance(plan, MxPlan)
    assert names(plan) == ["ok.part.test"]
    # the site is the MX host set as published, stable whatever resolves today
    assert plan.site.hosts == ("empty.part.test", "gone.part.test", "ok.part.test")


async def test_no_host_with_address_is_temporary(zone: LoopbackDns) -> None:
    zone.add_mx("noaddr.test", [(10, "empty.noaddr.test"), (20, "gone.noaddr.test")])
    zone.add_txt("empty.noaddr.test", "no address")
    res = await resolver(zone).resolve("noaddr.test")
    assert isinstance(res, DnsTempFail)
    assert "no MX host of noaddr.test has an address" in res.why


async def test_all_hosts_nxdomain_is_permanent(zone: LoopbackDns) -> None:
    zone.add_mx("dangling.test", [(10, "a.elsewhere.test"), (20, "b.elsewhere.test")])
    res = await resolver(zone).resolve("dangling.test")
    assert isinstance(res, DnsPermFail)
    assert "a.elsewhere.test does not exist (NXDOMAIN)" in res.why


async def test_host_with_one_family_failing_still_usable(zone: LoopbackDns, clock: FakeClock) -> None:
    zone.add_mx("half.test", [(10, "mx.half.test")], ttl=3000)
    zone.add_a("mx.half.test", "127.0.0.2", ttl=3000)
    zone.servfail("mx.half.test", "AAAA")
    r = resolver(zone, clock)
    plan = await r.resolve("half.test")
    assert isinstance(plan, MxPlan) and plan.hosts[0].addresses == ("127.0.0.2",)
    clock.advance(31)  # a partial answer is kept briefly only
    await r.resolve("half.test")
    assert zone.count("half.test", "MX") == 2


# endregion

# region failures


async def test_nxdomain_is_permanent(zone: LoopbackDns) -> None:
    res = await resolver(zone).resolve("no-such-domain.test")
    assert res == DnsPermFail("no-such-domain.test", "no-such-domain.test does not exist (NXDOMAIN)")


async def test_servfail_is_temporary_and_not_cached(zone: LoopbackDns) -> None:
    zone.servfail("broken.test")
    r = resolver(zone)
    res = await r.resolve("broken.test")
    assert isinstance(res, DnsTempFail)
    assert res.why == "DNS server failure for broken.test (MX): SERVFAIL"
    zone.heal("broken.test")
    zone.add_mx("broken.test", [(10, "mx.broken.test")])
    zone.add_a("mx.broken.test", "127.0.0.2")
    assert names(await r.resolve("broken.test")) == ["mx.broken.test"]


async def test_timeout_is_temporary(zone: LoopbackDns) -> None:
    zone.slow("dead.test", None)
    start = time.monotonic()
    res = await resolver(zone, timeout=0.3).resolve("dead.test")
    assert time.monotonic() - start < 1.5
    assert res == DnsTempFail("dead.test", "DNS timeout for dead.test (MX)")


async def test_timeout_on_mx_host_addresses(zone: LoopbackDns) -> None:
    zone.add_mx("slowhost.test", [(10, "mx.slowhost.test")])
    zone.add_a("mx.slowhost.test", "127.0.0.2")
    zone.slow("mx.slowhost.test", None)
    res = await resolver(zone, timeout=0.3).resolve("slowhost.test")
    assert isinstance(res, DnsTempFail)
    assert "DNS timeout for mx.slowhost.test" in res.why


async def test_slow_answer_within_timeout(zone: LoopbackDns) -> None:
    zone.add_mx("slow.test", [(10, "mx.slow.test")])
    zone.add_a("mx.slow.test", "127.0.0.2")
    zone.slow("slow.test", 0.1)
    assert names(await resolver(zone, timeout=1.0).resolve("slow.test")) == ["mx.slow.test"]


async def test_no_nameserver_answering_is_temporary() -> None:
    zone = await LoopbackDns().start()
    port = zone.port
    zone.stop()  # nothing listens there any more
    res = await MxResolver(nameservers=[("127.0.0.1", port)], timeout=0.3).resolve("example.com")
    assert isinstance(res, DnsTempFail)


async def test_invalid_domain_is_permanent(zone: LoopbackDns) -> None:
    assert isinstance(await resolver(zone).resolve(""), DnsPermFail)
    assert isinstance(await resolver(zone).resolve("a" * 64 + ".test"), DnsPermFail)
    assert zone.queries == {}


# endregion

# region site keys, names


async def test_site_shared_by_domains_with_same_mx_set(zone: LoopbackDns) -> None:
    zone.add_mx("one.test", [(10, "mx1.provider.test"), (20, "mx2.provider.test")])
    zone.add_mx("two.test", [(5, "MX2.provider.test."), (50, "mx1.provider.test")])
    zone.add_mx("three.test", [(10, "mx1.provider.test")])
    zone.add_a("mx1.provider.test", "127.0.0.2")
    zone.add_a("mx2.provider.test", "127.0.0.3")
    r = resolver(zone)
    one, two, three = [await r.resolve(d) for d in ("one.test", "two.test", "three.test")]
    assert isinstance(one, MxPlan) and isinstance(two, MxPlan) and isinstance(three, MxPlan)
    assert one.site == two.site == SiteKey(("mx1.provider.test", "mx2.provider.test"), 25)
    assert one.site.name == "mx1.provider.test,mx2.provider.test"
    assert three.site != one.site
    other_port = await r.resolve("one.test", port=2525)
    assert isinstance(other_port, MxPlan) and other_port.site == SiteKey(one.site.hosts, 2525)
    assert other_port.site.name.endswith(":2525")


async def test_domain_is_normalized_and_idn_encoded(zone: LoopbackDns) -> None:
    zone.add_mx("xn--bcher-kva.example", [(10, "mx.xn--bcher-kva.example")])
    zone.add_a("mx.xn--bcher-kva.example", "127.0.0.2")
    plan = await resolver(zone).resolve("Bücher.Example.")
    assert isinstance(plan, MxPlan)
    assert plan.domain == "xn--bcher-kva.example"
    assert normalize_domain("EXAMPLE.com.") == "example.com"
    with pytest.raises(ValueError):
        normalize_domain("   ")


async def test_address_literal_domain(zone: LoopbackDns) -> None:
    plan = await resolver(zone).resolve("[127.0.0.9]", port=2525)
    assert isinstance(plan, MxPlan)
    assert plan.hosts == (MxHost("127.0.0.9", 0, ("127.0.0.9",)),)
    assert plan.site == SiteKey(("127.0.0.9",), 2525)
    v6 = await resolver(zone).resolve("[IPv6:2001:DB8::1]")
    assert isinstance(v6, MxPlan) and v6.hosts[0].addresses == ("2001:db8::1",)
    assert isinstance(await resolver(zone).resolve("[300.1.1.1]"), DnsPermFail)
    assert zone.queries == {}


def test_site_for_literal() -> None:
    assert site_for_literal("Relay.Example.com.", 587) == SiteKey(("relay.example.com",), 587)
    assert site_for_literal("[2001:DB8::0:1]", 25) == SiteKey(("2001:db8::1",), 25)
    assert site_for_literal("192.0.2.1", 25).name == "192.0.2.1"


# endregion

# region cache


async def test_cache_hit_within_ttl_then_requery(zone: LoopbackDns, clock: FakeClock) -> None:
    zone.add_mx("cache.test", [(10, "mx.cache.test")], ttl=600)
    zone.add_a("mx.cache.test", "127.0.0.2", ttl=60)  # the smallest TTL of the answers wins
    r = resolver(zone, clock)
    first = await r.resolve("cache.test")
    assert zone.count("cache.test", "MX") == 1 and zone.count("mx.cache.test", "A") == 1
    clock.advance(59)
    assert await r.resolve("CACHE.test.") == first
    assert zone.count("cache.test") == 1 and zone.count("mx.cache.test") == 2  # A + AAAA, once
    zone.remove("mx.cache.test", "A")
    zone.add_a("mx.cache.test", "127.0.0.3", ttl=60)
    clock.advance(2)
    again = await r.resolve("cache.test")
    assert zone.count("cache.test", "MX") == 2
    assert isinstance(again, MxPlan) and again.hosts[0].addresses == ("127.0.0.3",)


async def test_cache_is_per_port(zone: LoopbackDns, clock: FakeClock) -> None:
    zone.add_mx("ports.test", [(10, "mx.ports.test")])
    zone.add_a("mx.ports.test", "127.0.0.2")
    r = resolver(zone, clock)
    await r.resolve("ports.test", 25)
    await r.resolve("ports.test", 2525)
    await r.resolve("ports.test", 2525)
    assert zone.count("ports.test", "MX") == 2


@pytest.mark.parametrize(("ttl", "kept"), [(1, 5.0), (86400, 3600.0)])
async def test_ttl_floor_and_cap(zone: LoopbackDns, clock: FakeClock, ttl: int, kept: float) -> None:
    zone.add_mx("ttl.test", [(10, "mx.ttl.test")], ttl=ttl)
    zone.add_a("mx.ttl.test", "127.0.0.2", ttl=ttl)
    r = resolver(zone, clock)
    await r.resolve("ttl.test")
    clock.advance(kept - 0.5)
    await r.resolve("ttl.test")
    assert zone.count("ttl.test", "MX") == 1
    clock.advance(1)
    await r.resolve("ttl.test")
    assert zone.count("ttl.test", "MX") == 2


async def test_negative_results_cached_five_minutes(zone: LoopbackDns, clock: FakeClock) -> None:
    zone.null_mx("nomail.test")
    r = resolver(zone, clock)
    assert isinstance(await r.resolve("nx.test"), DnsPermFail)
    assert isinstance(await r.resolve("nomail.test"), NullMx)
    clock.advance(299)
    assert isinstance(await r.resolve("nx.test"), DnsPermFail)
    assert isinstance(await r.resolve("nomail.test"), NullMx)
    assert zone.count("nx.test") == 1 and zone.count("nomail.test") == 1
    clock.advance(2)
    await r.resolve("nx.test")
    await r.resolve("nomail.test")
    assert zone.count("nx.test") == 2 and zone.count("nomail.test") == 2


async def test_forget_drops_cache(zone: LoopbackDns, clock: FakeClock) -> None:
    zone.add_mx("f.test", [(10, "mx.f.test")])
    zone.add_a("mx.f.test", "127.0.0.2")
    r = resolver(zone, clock)
    await r.resolve("f.test")
    r.forget("f.test")
    await r.resolve("f.test")
    assert zone.count("f.test", "MX") == 2


async def test_concurrent_lookups_share_one_query(zone: LoopbackDns) -> None:
    zone.add_mx("busy.test", [(10, "mx.busy.test")])
    zone.add_a("mx.busy.test", "127.0.0.2")
    zone.slow("busy.test", 0.05)
    r = resolver(zone)
    plans = await asyncio.gather(*(r.resolve("busy.test") for _ in range(10)))
    assert all(isinstance(p, MxPlan) for p in plans)
    assert zone.count("busy.test", "MX") == 1


async def test_cache_is_bounded(zone: LoopbackDns, clock: FakeClock) -> None:
    r = MxResolver(nameservers=[zone.address], timeout=1.0, clock=clock, max_cache=3)
    for i in range(6):
        await r.resolve(f"nx{i}.test")
    assert len(r._cache) <= 3


# endregion
