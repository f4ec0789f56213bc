"""Where a webhook may POST (SSRF): customers choose the URL, so without a check they could make
the relay POST to the operator's own network (a database admin page, a cloud metadata service).

Unless ``[webhooks] allow_private_addresses`` is on, a destination must be a public (global
unicast) address: loopback, private (RFC 1918, fc00::/7), link-local, shared (100.64/10),
multicast, unspecified and reserved addresses are refused, IPv4-mapped IPv6 included. Checked twice:

- when a webhook is added (``check_host``): an address literal (also the forms ``inet_aton``
  accepts, such as ``2130706433`` or ``0x7f.1``) or a ``localhost`` name; names are not resolved
  here, because what a name resolves to can change after the check anyway;
- before every POST (:class:`PublicOnlyResolver` for names, ``check_host`` for literals, which
  aiohttp does not resolve): every address a name resolves to must be public, so a name that
  is re-pointed at an internal address later (DNS rebinding) is refused at the POST, which fails
  like an unreachable endpoint (retried, then disabled with the reason).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

_INET_ATON = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}", re.IGNORECASE)
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(OSError):
    """A non-public destination while private addresses are not allowed; the message says why."""


def why_not_public(ip: IpAddress) -> str | None:
    """None for a global unicast address, else what it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return why_not_public(ip.ipv4_mapped)
    for attr, what in (("is_loopback", "a loopback"), ("is_unspecified", "an unspecified"),
                       ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                       ("is_reserved", "a reserved"), ("is_private", "a private")):
        if getattr(ip, attr):
            return f"{what} address"
    if not ip.is_global:
        return "not a public address"
    return None


def literal(host: str) -> IpAddress | None:
    """The address a host names literally (``[v6]`` without brackets), or None for a name."""
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    if len(h) <= 64 and _INET_ATON.fullmatch(h):
        try:  # what the system resolver would make of it: 2130706433, 127.1, 0x7f.0.0.1
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def check_host(host: str) -> None:
    """Raise :class:`DestinationRefused` for a literal non-public address or a localhost name."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise DestinationRefused(f"{host[:80]} is a loopback name")
    ip = literal(host)
    if ip is not None and (why := why_not_public(ip)) is not None:
        raise DestinationRefused(f"{ip} is {why}")


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses; none left is a refusal."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        check_host(host)
        results = await self._inner.resolve(host, port, family)
        public = [r for r in results if why_not_public(ipaddress.ip_address(r["host"].split("%", 1)[0])) is None]
        if not public:
            shown = ", ".join(sorted({r["host"] for r in results}))[:200]
            raise DestinationRefused(f"{host[:80]} resolves only to non-public addresses ({shown})")
        return public

    async def close(self) -> None:
        await self._inner.close()
