"""Static routes before MX: a Postfix-style ``relayhost`` and ``transport`` map.

Lookup order for a recipient domain (Postfix ``transport(5)`` with the default
``parent_domain_matches_subdomains`` that leaves out transport maps):

1. ``example.com``   — the domain itself only;
2. ``.example.com``  — any subdomain of example.com, the closest parent first;
3. ``*``             — every other domain;
4. the relay host    — when set;
5. otherwise no route: the domain's own MX records.

A routed domain is delivered to the named host on its port. The host's A/AAAA records are used,
never its MX records (Postfix's ``[host]`` form); an IP literal is used as is. Its site is just that
host, so every domain routed through one relay shares one connection budget. Route lookups that
fail are temporary: a broken relay host is a configuration problem, not a reason to bounce mail.
"""

from __future__ import annotations

from collections.abc import Mapping

from relay.delivery.mx import DnsPermFail, MxResolver, MxResult, normalize_domain

__all__ = ["Routes", "plan_for"]


def _key(entry: str) -> str:
    """Normalize a transport map key, keeping a leading ``.`` (subdomains) or ``*``."""
    e = entry.strip().lower()
    if e == "*":
        return e
    if e.startswith("."):
        return "." + normalize_domain(e[1:])
    return normalize_domain(e)


class Routes:
    """Relay host and transport map; ``route_for(domain)`` -> ``(host, port)`` or None (use MX)."""

    def __init__(self, relayhost: tuple[str, int] | None = None,
                 transport: Mapping[str, tuple[str, int]] | None = None) -> None:
        self.relayhost = relayhost
        self.transport: dict[str, tuple[str, int]] = {_key(k): v for k, v in (transport or {}).items()}

    def __repr__(self) -> str:
        return f"Routes(relayhost={self.relayhost!r}, transport={self.transport!r})"

    @property
    def empty(self) -> bool:
        return self.relayhost is None and not self.transport

    def route_for(self, domain: str) -> tuple[str, int] | None:
        if self.empty:
            return None
        try:
            d = normalize_domain(domain)
        except ValueError:
            return None
        t = self.transport
        if d in t:
            return t[d]
        labels = d.split(".")
        for i in range(1, len(labels)):
            parent = "." + ".".join(labels[i:])
            if parent in t:
                return t[parent]
        if "*" in t:
            return t["*"]
        return self.relayhost


async def plan_for(domain: str, resolver: MxResolver, routes: Routes, mx_port: int = 25) -> MxResult:
    """Where to deliver mail for ``domain``: its route if it has one, else its MX records on ``mx_port``."""
    route = routes.route_for(domain)
    if route is None:
        return await resolver.resolve(domain, mx_port)
    try:
        d = normalize_domain(domain)
    except ValueError as e:  # unreachable: route_for() returns None for such names
        return DnsPermFail(domain, str(e))
    host, port = route
    return await resolver.resolve_host(host, port, domain=d)
