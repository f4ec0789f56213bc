"""Packaged rules data (``*.toml``) and the small loaders that are not classifiers.

- :data:`RULES_DIR` / :func:`packaged_path` locate the files shipped with the package
  (``reply_rules.toml``: SMTP reply classification, ``tencent.toml``: Tencent mailboxes).
- :func:`load_tencent_rules` reads ``tencent.toml`` (or an operator's copy) into
  :class:`policies.TencentRules`, the input of the bounce-list expiry rule (SPEC §7).

Loading happens once at start-up; a malformed file raises :class:`RulesError` naming the file
and the offending key, never a silent default (KumoMTA's typed records).
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from policies import TencentRules

RULES_DIR = Path(__file__).resolve().parent

_TENCENT_KEYS = frozenset({"domains", "mx_suffixes"})


class RulesError(ValueError):
    """A rules file is malformed; the message names the file and the rule or key."""


def packaged_path(name: str) -> Path:
    """The packaged rules file ``name`` (e.g. ``"reply_rules.toml"``)."""
    return RULES_DIR / name


def read_toml(path: Path) -> dict[str, object]:
    """Parse one rules file; TOML syntax errors become :class:`RulesError` naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise RulesError(f"{path}: cannot read rules file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: invalid TOML: {exc}") from exc


def load_tencent_rules(path: Path | None = None) -> TencentRules:
    """Tencent domains and MX suffixes from ``path`` (default: the packaged ``tencent.toml``)."""
    src = path or packaged_path("tencent.toml")
    data = read_toml(src)
    unknown = sorted(set(data) - _TENCENT_KEYS)
    if unknown:
        raise RulesError(f"{src}: unknown key(s) {', '.join(unknown)} (allowed: domains, mx_suffixes)")
    lists: dict[str, list[str]] = {}
    for key in sorted(_TENCENT_KEYS):
        value = data.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise RulesError(f"{src}: {key} must be a non-empty list of non-empty strings")
        lists[key] = value
    try:
        return TencentRules(domains=frozenset(lists["domains"]), mx_suffixes=tuple(lists["mx_suffixes"]))
    except ValueError as exc:
        raise RulesError(f"{src}: {exc}") from exc


@cache
def packaged_tencent_rules() -> TencentRules:
    """The packaged ``tencent.toml``, read once per process."""
    return load_tencent_rules()


__all__ = ["RULES_DIR", "RulesError", "load_tencent_rules", "packaged_path", "packaged_tencent_rules", "read_toml"]
