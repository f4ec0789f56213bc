"""MX resolution (dnspython's asyncio resolver): a domain -> where to deliver, or why not.

RFC 5321 §5.1 and RFC 7505, in this order:

- MX records sorted by ascending preference; hosts of equal preference in random order (a fresh
  shuffle on every ``resolve``, cached or not, so connections spread over equal MX hosts).
- No MX records (NODATA) -> the implicit MX: the domain's own A/AAAA, preference 0.
- A single ``MX 0 .`` -> :class:`NullMx`: the domain accepts no mail (permanent).
- NXDOMAIN -> :class:`DnsPermFail`. Timeout, SERVFAIL, no nameserver answering -> :class:`DnsTempFail`.
- Each MX host resolves to A then AAAA (IPv4 first). A host without addresses is skipped; when no
  host has one the result is temporary, unless every host is NXDOMAIN (permanent).

The :class:`SiteKey` is the sorted set of MX host names and the port (KumoMTA's site name), so
domains hosted on the same provider share one site. Results are cached per (domain, port) for the
smallest TTL of the answers (5 s .. 1 h); NXDOMAIN and null MX for 5 minutes; temporary failures
are not cached. Concurrent lookups of one key share one query. ``timeout`` bounds each DNS query
(retries included); a whole ``resolve`` is MX, then A and AAAA of all hosts in parallel: at most 2×.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from relay.delivery.types import SiteKey

__all__ = [
    "DnsPermFail",
    "DnsTempFail",
    "MxHost",
    "MxPlan",
    "MxResolver",
    "MxResult",
    "NullMx",
    "normalize_domain",
    "site_for_literal",
]

MAX_TTL = 3600.0
MIN_TTL = 5.0
NEGATIVE_TTL = 300.0  # NXDOMAIN, null MX, "no MX and no address"
PARTIAL_TTL = 30.0  # a plan built while some address lookups failed temporarily
MAX_CACHE = 100_000


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str  # lower case, no trailing dot (for an IP literal route: the address)
    preference: int
    addresses: tuple[str, ...]  # IPv4 first, then IPv6


@dataclass(frozen=True, slots=True)
class MxPlan:
    """Where to deliver mail for ``domain``: hosts in the order to try them (only hosts with addresses)."""

    domain: str
    site: SiteKey
    hosts: tuple[MxHost, ...]
    implicit: bool = False  # no MX records: the domain's own addresses (RFC 5321 §5.1)

    @property
    def why(self) -> str:
        kind = "implicit MX" if self.implicit else "MX"
        listed = ", ".join(f"{h.name}({h.preference})" for h in self.hosts)
        return f"{kind} for {self.domain}: {listed}"


@dataclass(frozen=True, slots=True)
class NullMx:
    """The domain publishes ``MX 0 .``: it accepts no mail. Permanent."""

    domain: str

    @property
    def why(self) -> str:
        return f"{self.domain} accepts no mail: null MX (RFC 7505)"


@dataclass(frozen=True, slots=True)
class DnsTempFail:
    """A failure that may go away: retry later."""

    domain: str
    why: str


@dataclass(frozen=True, slots=True)
class DnsPermFail:
    """The domain does not exist (or cannot be a mail destination). Permanent."""

    domain: str
    why: str


MxResult = MxPlan | NullMx | DnsTempFail | DnsPermFail


def normalize_domain(domain: str) -> str:
    """Lower case, no trailing dot, IDN U-labels -> A-labels (``"Bücher.example"`` -> ``"xn--bcher-kva.example"``).

    Raises ``ValueError`` for names that cannot be a domain.
    """
    d = domain.strip().rstrip(".").lower()
    if not d:
        raise ValueError("empty domain")
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii").lower()
        except UnicodeError as e:
            raise ValueError(f"invalid international domain name {domain!r}: {e}") from None
    try:
        dns.name.from_text(d)
    except dns.exception.DNSException as e:
        raise ValueError(f"invalid domain name {domain!r}: {e}") from None
    return d


def _literal_ip(text: str) -> str | None:
    """``"[192.0.2.1]"``, ``"[IPv6:2001:db8::1]"``, ``"192.0.2.1"`` -> normalized address; else None."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
        if t[:5].lower() == "ipv6:":
            t = t[5:]
    try:
        return str(ipaddress.ip_address(t))
    except ValueError:
        return None


def site_for_literal(host: str, port: int) -> SiteKey:
    """The site of one explicitly named host (relay host, transport route, address literal)."""
    ip = _literal_ip(host)
    return SiteKey((ip if ip is not None else host.strip().strip("[]").rstrip(".").lower(),), port)


# region address lookups
_Key = tuple[str, str, int]  # ("mx" | "host", name, port)
_Kind = Literal["ok", "nodata", "nxdomain", "temp"]


@dataclass(frozen=True, slots=True)
class _Lookup:
    kind: _Kind
    values: tuple[str, ...] = ()
    ttl: float = MAX_TTL
    why: str = ""


@dataclass(frozen=True, slots=True)
class _Addresses:
    name: str
    addresses: tuple[str, ...]
    ttl: float
    kind: _Kind  # "ok" when any address, else the most telling failure
    partial: bool  # one family failed temporarily
    why: str


def _combine(name: str, v4: _Lookup, v6: _Lookup) -> _Addresses:
    addrs = tuple(dict.fromkeys(v4.values + v6.values))
    ttl = min((x.ttl for x in (v4, v6) if x.kind == "ok"), default=MAX_TTL)
    partial = "temp" in (v4.kind, v6.kind)
    if addrs:
        return _Addresses(name, addrs, ttl, "ok", partial, "")
    if partial:
        why = v4.why if v4.kind == "temp" else v6.why
        return _Addresses(name, (), ttl, "temp", True, why)
    if v4.kind == "nxdomain" or v6.kind == "nxdomain":
        return _Addresses(name, (), ttl, "nxdomain", False, f"{name} does not exist (NXDOMAIN)")
    return _Addresses(name, (), ttl, "nodata", False, f"{name} has no A/AAAA records")


# endregion


class MxResolver:
    """``await resolve(domain, port)`` -> :data:`MxResult`. Never raises for DNS trouble."""

    def __init__(
        self,
        nameservers: list[tuple[str, int]] | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        max_cache: int = MAX_CACHE,
    ) -> None:
        if nameservers:
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
        else:
            r = dns.asyncresolver.Resolver()  # /etc/resolv.conf
        r.timeout = timeout  # per server and try
        r.lifetime = timeout  # the whole query, retries included
        r.cache = None  # we cache whole plans ourselves
        self._r = r
        self.timeout = timeout
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.max_cache = max_cache
        self._cache: dict[_Key, tuple[float, MxResult]] = {}
        self._inflight: dict[_Key, asyncio.Future[MxResult]] = {}

    # region public
    async def resolve(self, domain: str, port: int = 25) -> MxResult:
        """MX plan for ``domain`` (hosts reachable on ``port``), from the cache when fresh."""
        if domain.strip().startswith("["):  # address literal: user@[192.0.2.1] (RFC 5321 §4.1.3)
            ip = _literal_ip(domain)
            if ip is None:
                return DnsPermFail(domain, f"invalid address literal {domain!r}")
            lit = domain.strip().lower()
            return MxPlan(lit, site_for_literal(ip, port), (MxHost(ip, 0, (ip,)),), implicit=True)
        try:
            d = normalize_domain(domain)
        except ValueError as e:
            return DnsPermFail(domain, str(e))
        return self._shuffle(await self._cached(("mx", d, port), lambda: self._lookup_mx(d, port)))

    async def resolve_host(self, host: str, port: int, domain: str | None = None) -> MxResult:
        """One named host's A/AAAA (no MX lookup): a relay host or transport route for ``domain``.

        Any failure is temporary: a missing relay host is a configuration error, not a reason to
        bounce mail (Postfix defers with 4.3.5 in that case).
        """
        for_domain = domain if domain is not None else host
        ip = _literal_ip(host)
        if ip is not None:
            return MxPlan(for_domain, site_for_literal(ip, port), (MxHost(ip, 0, (ip,)),))
        try:
            h = normalize_domain(host.strip().strip("[]"))  # "[relay.example]": Postfix's "no MX lookup" form
        except ValueError as e:
            return DnsTempFail(for_domain, f"relay host {host}: {e}")
        res = await self._cached(("host", h, port), lambda: self._lookup_host(h, port))
        if isinstance(res, MxPlan):
            return replace(res, domain=for_domain)
        why = getattr(res, "why", str(res))
        return DnsTempFail(for_domain, f"relay host {h}: {why}")

    def forget(self, domain: str | None = None) -> None:
        """Drop cached results (of one domain, or all)."""
        if domain is None:
            self._cache.clear()
            return
        d = normalize_domain(domain)
        for key in [k for k in self._cache if k[1] == d]:
            del self._cache[key]

    # endregion

    # region cache
    async def _cached(self, key: _Key, lookup: Callable[[], Awaitable[tuple[MxResult, float]]]) -> MxResult:
        hit = self._cache.get(key)
        if hit is not None:
            expires, res = hit
            if self.clock() < expires:
                return res
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:  # one query for all concurrent callers
            task = asyncio.ensure_future(self._fill(key, lookup))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _fill(self, key: _Key, lookup: Callable[[], Awaitable[tuple[MxResult, float]]]) -> MxResult:
        res, ttl = await lookup()
        if ttl > 0:
            now = self.clock()
            if len(self._cache) >= self.max_cache:
                self._evict(now)
            self._cache[key] = (now + ttl, res)
        return res

    def _evict(self, now: float) -> None:
        for k in [k for k, (exp, _r) in self._cache.items() if exp <= now]:
            del self._cache[k]
        while len(self._cache) >= self.max_cache:
            del self._cache[next(iter(self._cache))]  # the oldest insertion

    def _shuffle(self, res: MxResult) -> MxResult:
        """Random order among hosts of equal preference (RFC 5321 §5.1), fresh on every call."""
        if not isinstance(res, MxPlan) or len(res.hosts) < 2:
            return res
        groups: dict[int, list[MxHost]] = {}
        for h in res.hosts:  # already sorted by preference
            groups.setdefault(h.preference, []).append(h)
        if all(len(g) == 1 for g in groups.values()):
            return res
        hosts: list[MxHost] = []
        for g in groups.values():
            self.rng.shuffle(g)
            hosts.extend(g)
        return replace(res, hosts=tuple(hosts))

    # endregion

    # region lookups
    async def _query(self, name: str, rdtype: str) -> tuple[_Kind, dns.resolver.Answer | None, str]:
        try:
            ans = await self._r.resolve(dns.name.from_text(name), rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return "nxdomain", None, f"{name} does not exist (NXDOMAIN)"
        except dns.resolver.NoAnswer:
            return "nodata", None, f"{name} has no {rdtype} records"
        except dns.exception.Timeout:
            return "temp", None, f"DNS timeout for {name} ({rdtype})"
        except dns.resolver.NoNameservers as e:
            errors = e.kwargs.get("errors") or []
            detail = ", ".join(dict.fromkeys(str(err[3]) for err in errors if len(err) > 3)) or "no answer"
            return "temp", None, f"DNS server failure for {name} ({rdtype}): {detail}"
        except (dns.exception.DNSException, OSError) as e:
            return "temp", None, f"DNS error for {name} ({rdtype}): {type(e).__name__}: {e}"
        return "ok", ans, ""

    async def _family(self, name: str, rdtype: str) -> _Lookup:
        kind, ans, why = await self._query(name, rdtype)
        if ans is None or ans.rrset is None:
            return _Lookup("nodata" if kind == "ok" else kind, why=why)
        values = tuple(str(ipaddress.ip_address(r.address)) for r in ans.rrset)
        return _Lookup("ok", values, float(ans.chaining_result.minimum_ttl), "")

    async def _addresses(self, name: str) -> _Addresses:
        v4, v6 = await asyncio.gather(self._family(name, "A"), self._family(name, "AAAA"))
        return _combine(name, v4, v6)

    async def _lookup_mx(self, d: str, port: int) -> tuple[MxResult, float]:
        kind, ans, why = await self._query(d, "MX")
        if kind == "nxdomain":
            return DnsPermFail(d, why), NEGATIVE_TTL
        if kind == "temp":
            return DnsTempFail(d, why), 0.0
        if ans is None or ans.rrset is None:  # no MX: the implicit MX is the domain itself
            return await self._implicit(d, port)
        prefs: dict[str, int] = {}
        for r in ans.rrset:
            if r.exchange == dns.name.root:
                continue  # "MX 0 ." next to real MX records is a misconfiguration: ignore it (RFC 7505 §3)
            name = r.exchange.to_text(omit_final_dot=True).lower()
            prefs[name] = min(r.preference, prefs.get(name, r.preference))
        if not prefs:
            return NullMx(d), NEGATIVE_TTL
        site = SiteKey(tuple(sorted(prefs)), port)
        found = await asyncio.gather(*(self._addresses(n) for n in prefs))
        hosts = tuple(sorted((MxHost(a.name, prefs[a.name], a.addresses) for a in found if a.addresses),
                             key=lambda h: (h.preference, h.name)))
        if not hosts:
            whys = "; ".join(a.why for a in found)
            if all(a.kind == "nxdomain" for a in found):
                return DnsPermFail(d, f"no MX host of {d} exists: {whys}"), NEGATIVE_TTL
            return DnsTempFail(d, f"no MX host of {d} has an address: {whys}"), 0.0
        ttl = min([float(ans.chaining_result.minimum_ttl)] + [a.ttl for a in found if a.addresses])
        if any(a.partial or a.kind == "temp" for a in found):
            ttl = min(ttl, PARTIAL_TTL)
        return MxPlan(d, site, hosts), _clamp(ttl)

    async def _implicit(self, d: str, port: int) -> tuple[MxResult, float]:
        a = await self._addresses(d)
        if a.kind == "temp":
            return DnsTempFail(d, f"no MX for {d}, and its address lookup failed: {a.why}"), 0.0
        if not a.addresses:  # NODATA for MX, A and AAAA: not a mail domain (Postfix: 5.4.4)
            return DnsPermFail(d, f"{d} has no MX and no A/AAAA records"), NEGATIVE_TTL
        plan = MxPlan(d, SiteKey((d,), port), (MxHost(d, 0, a.addresses),), implicit=True)
        return plan, min(_clamp(a.ttl), PARTIAL_TTL) if a.partial else _clamp(a.ttl)

    async def _lookup_host(self, h: str, port: int) -> tuple[MxResult, float]:
        a = await self._addresses(h)
        if a.addresses:
            plan = MxPlan(h, SiteKey((h,), port), (MxHost(h, 0, a.addresses),))
            return plan, min(_clamp(a.ttl), PARTIAL_TTL) if a.partial else _clamp(a.ttl)
        if a.kind == "temp":
            return DnsTempFail(h, a.why), 0.0
        return DnsPermFail(h, a.why), NEGATIVE_TTL

    # endregion


def _clamp(ttl: float) -> float:
    return max(MIN_TTL, min(MAX_TTL, ttl))
