"""Typed values of the delivery stage itself (the outcome vocabulary is in ``relay.rules.types``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class SiteKey:
    """A destination site: the sorted MX host set (KumoMTA's site name) and the port."""

    hosts: tuple[str, ...]
    port: int = 25

    @property
    def name(self) -> str:
        return ",".join(self.hosts) + (f":{self.port}" if self.port != 25 else "")
