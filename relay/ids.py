"""email_id generation: time-sortable, unique across nodes, safe in file names and URLs.

Format: 26 characters of Crockford base32, ULID-style: 48 bits of milliseconds since the epoch,
then 80 random bits. Sorting ids sorts by submission time, which keeps spool scans and status
pages in arrival order.
"""

from __future__ import annotations

import random
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Ids need uniqueness, not secrecy: a PRNG seeded from the OS saves a syscall per message.
_rng = random.Random()
_B32 = {i: _ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)}  # 10 bits -> 2 characters


def new_email_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | _rng.getrandbits(80)
    return "".join([_B32[(value >> shift) & 1023] for shift in range(120, -1, -10)])  # 13 x 10 bits


def is_email_id(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text)
