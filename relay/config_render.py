"""Render mailrelay.toml with every key, its default and its documentation.

The documentation of a key is the trailing comment on its field in ``relay/config.py``, so the
example config and the code cannot drift apart (``tests/unit/test_config.py`` checks both ways).
Keys set by ``mailrelay init`` appear uncommented; every other key appears as a commented default.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import typing
from typing import Any

from relay.config import Config

_FIELD_DOC = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")
#: Keys whose value is a secret (http.admin_token, any *_token, *_password, *_secret, *_key).
_SECRET_NAME = re.compile(r"(?:^|_)(?:token|password|passwd|secret|key)$")
#: The password of a URL's user info (postgresql://user:PASSWORD@host/db).
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,30}://[^/:@\s]*:)[^@/\s]*@")
REDACTED = "<redacted>"


def _field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for line in inspect.getsource(cls).splitlines():
        m = _FIELD_DOC.match(line)
        if m:
            docs[m.group(1)] = m.group(2).strip()
    return docs


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r}")


def redact(key: str, value: Any) -> Any:
    """``value`` as `config check` shows it: a secret becomes ``<redacted>`` (an empty one stays
    empty, so "not set" is still visible), a password inside a URL too."""
    if not isinstance(value, str) or not value:
        return value
    if _SECRET_NAME.search(key.rpartition(".")[2]):
        return REDACTED
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}@", value)


def render_config(settings: dict[str, Any], notes: dict[str, str] | None = None) -> str:
    """``settings`` maps dotted keys (``"smtp.listen"``) to values that are written active."""
    notes = notes or {}
    hints = typing.get_type_hints(Config)
    out = [
        "# mailrelay configuration. Every key is listed; a commented line shows the default.",
        "# Relative paths resolve against the directory of this file (the data directory).",
        "# Durations: \"30s\", \"5m\", \"2h\", \"3d\". Sizes: bytes.",
        "",
    ]
    unknown = set(settings) - {k for k, _ in _all_keys()}
    if unknown:
        raise KeyError(f"unknown config keys: {sorted(unknown)}")
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            continue
        section_cls = hints[f.name]
        docs = _field_docs(section_cls)
        out.append(f"[{f.name}]")
        default_inst = section_cls()
        for sf in dataclasses.fields(section_cls):
            key = f"{f.name}.{sf.name}"
            doc = docs.get(sf.name, "")
            default = getattr(default_inst, sf.name)
            if doc:
                out.append(f"# {doc} (default: {toml_value(default)})")
            if key in notes:
                out.append(f"# NOTE: {notes[key]}")
            if key in settings:
                out.append(f"{sf.name} = {toml_value(settings[key])}")
            else:
                out.append(f"# {sf.name} = {toml_value(default)}")
        out.append("")
    return "\n".join(out)


def _all_keys() -> list[tuple[str, Any]]:
    from relay.config import iter_keys

    return list(iter_keys())
