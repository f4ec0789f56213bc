"""Validation of list values typed or uploaded by people: an address, or a bare domain."""

from __future__ import annotations

from policies import FormatError, parse_address
from storage.records import ListKind

#: Lists whose entries may name a whole receiving domain (SPEC §3, §7).
DOMAIN_LISTS = frozenset({ListKind.BLOCK, ListKind.NO_INTERCEPTION})


def normalize_value(raw: str, kind: ListKind) -> tuple[str, str | None]:
    """→ (lookup value, None) or ("", error detail)."""
    text = raw.strip()
    if not text:
        return "", "empty value"
    if "@" not in text:
        if kind not in DOMAIN_LISTS:
            return "", f"the {kind.value} list holds addresses, not domains"
        as_address = parse_address(f"x@{text}", True)
        if isinstance(as_address, FormatError):
            return "", f"invalid domain ({as_address.detail})"
        return as_address.domain, None
    parsed = parse_address(text, True)
    if isinstance(parsed, FormatError):
        return "", f"invalid address ({parsed.detail})"
    return parsed.key, None
