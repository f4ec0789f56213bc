"""email_id generation: time-sortable, unique across nodes, safe in file names and URLs.

Format: 26 characters of Crockford base32, ULID-style: 48 bits of milliseconds since the epoch,
then 80 random bits. Sorting ids sorts by submission time, which keeps spool scans and status
pages in arrival order.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_email_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_email_id(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text)
