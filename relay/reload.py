"""Configuration reload (SIGHUP, systemd ``ExecReload``): which keys a running server applies.

A reload re-reads ``mailrelay.toml``. A file that does not load is refused as a whole (the server
keeps running on what it has). Of a valid file, the keys in :data:`RELOADABLE` take effect at once;
every other changed key is reported as needing a restart, never half-applied. The TLS certificate
and key are re-read on every reload, so a certificate renewed in place needs no restart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from relay.config import Config

RELOADABLE = frozenset({
    "log.level",
    "http.search_per_minute",
    "http.exports_per_minute",
    "http.request_timeout",
    "tls.cert_file",
    "tls.key_file",
})


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(_flatten(value, key))
        else:
            out[key] = value
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ, sorted."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def split_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """(keys applied by a reload, keys that need a restart)."""
    changed = changed_keys(old, new)
    return [k for k in changed if k in RELOADABLE], [k for k in changed if k not in RELOADABLE]
