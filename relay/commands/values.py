"""Validation of list values typed or uploaded by people: an address, or a bare domain."""

from __future__ import annotations

import unicodedata

from policies import FormatError, parse_address
from storage.records import ListKind

#: Lists whose entries may name a whole receiving domain (SPEC §3, §7).
DOMAIN_LISTS = frozenset({ListKind.BLOCK, ListKind.NO_INTERCEPTION})


def normalize_value(raw: str, kind: ListKind) -> tuple[str, str | None]:
    """→ (lookup value, None) or ("", error detail)."""
    text = raw.strip()
    if not text:
        return "", "empty value"
    invisible = next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf")), None)
    if invisible is not None:  # e.g. a byte-order mark: stored, it would never match any recipient
        return "", f"contains the invisible character U+{ord(invisible):04X}"
    if "@" not in text:
        if kind not in DOMAIN_LISTS:
            return "", f"the {kind.value} list holds addresses, not domains"
        as_address = parse_address(f"x@{text}", True)
        if isinstance(as_address, FormatError):
            return "", f"invalid domain ({as_address.detail})"
        if "." not in as_address.domain:
            return "", "invalid domain (a receiving domain has at least two labels, like example.com)"
        return as_address.domain, None
    parsed = parse_address(text, True)
    if isinstance(parsed, FormatError):
        return "", f"invalid address ({parsed.detail})"
    return parsed.key, None
