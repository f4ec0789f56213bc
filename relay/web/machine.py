"""Opens fetched by mail-privacy proxies rather than by the person (recorded with ``machine: true``).

Apple Mail Privacy Protection pre-fetches every image through Apple's own network (17.0.0.0/8);
Gmail and Yahoo fetch images through proxies that name themselves in the User-Agent.
"""

from __future__ import annotations

import ipaddress

_APPLE = ipaddress.ip_network("17.0.0.0/8")
_PROXY_AGENTS = ("GoogleImageProxy", "YahooMailProxy", "ggpht.com")


def is_machine_open(ip: str, user_agent: str) -> bool:
    if any(a in user_agent for a in _PROXY_AGENTS):
        return True
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr in _APPLE
