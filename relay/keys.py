"""API keys: generation, scrypt hashing, constant-time verification.

Stored form: ``scrypt$<n>$<r>$<p>$<salt-b64>$<hash-b64>``. Verification always costs one scrypt,
also for unknown users (against :data:`DUMMY_HASH`), so response time does not reveal which
API_USER names exist. Callers run :func:`verify_key` in a thread: it takes tens of milliseconds
on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

_N, _R, _P = 2**14, 8, 1
_DKLEN = 32


def generate_key(nbytes: int = 32) -> str:
    """A random key in the URL-safe base64 alphabet that never starts with ``-`` (a command line
    tool such as swaks would take such a key for an option)."""
    while True:
        key = secrets.token_urlsafe(nbytes)
        if not key.startswith("-"):
            return key


def hash_key(key: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(key.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_key(key: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
        got = hashlib.scrypt(
            key.encode("utf-8", "surrogateescape"), salt=salt, n=int(n), r=int(r), p=int(p),
            dklen=len(expected), maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


#: Verified against when the API_USER does not exist, so that path costs the same.
DUMMY_HASH = hash_key(secrets.token_urlsafe(16))
