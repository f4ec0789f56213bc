"""The signed per-recipient return path (VERP): one address per (message, recipient).

Format of the local part (51 octets, within RFC 5321's 64)::

    b-<email_id>-<rcpt>-<mac>@<bounce domain>
      email_id  26 chars, the message's id (Crockford base32), lower-cased
      rcpt      8 chars, recipient_hash(): 40 bits of SHA-256 of the lower-cased recipient
      mac       16 chars, 80 bits of HMAC-SHA256(secret, "mailrelay-verp-v1" | email_id | rcpt)

Everything is lower-case base32, so an MTA that lower- or upper-cases the local part does not
break it (decoding is case-insensitive). Recipients do not fit in 64 octets, so the address
carries a hash: the feedback side finds the recipient row among the message's recipients with
:func:`recipient_hash` (stable across key rotation: it is not keyed). The MAC binds the id and the
hash, so a forged bounce cannot name another message or recipient; the domain is not signed (a
bounce may arrive through any of the configured feedback domains).

Key rotation: :func:`decode` accepts several secrets (newest first); sign with the newest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from relay.ids import is_email_id

PREFIX = "b"
_CONTEXT = b"mailrelay-verp-v1"
_HASH_CHARS = 8  # 40 bits
_MAC_CHARS = 16  # 80 bits
_LOCAL = re.compile(
    rf"^{PREFIX}-(?P<id>[0-9a-hjkmnp-tv-z]{{26}})-(?P<rcpt>[a-z2-7]{{{_HASH_CHARS}}})-(?P<mac>[a-z2-7]{{{_MAC_CHARS}}})$"
)

__all__ = ["VerpToken", "decode", "encode", "local_part", "recipient_hash"]


@dataclass(frozen=True, slots=True)
class VerpToken:
    email_id: str  # upper-case, as relay.ids makes it
    recipient_hash: str  # compare with recipient_hash(candidate)


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def recipient_hash(recipient: str) -> str:
    """40-bit hash of the recipient address (trimmed, lower-cased), 8 lower-case base32 chars."""
    digest = hashlib.sha256(recipient.strip().lower().encode("utf-8")).digest()
    return _b32(digest[:5])


def _mac(secret: bytes, email_id: str, rhash: str) -> str:
    msg = b"\0".join((_CONTEXT, email_id.encode("ascii"), rhash.encode("ascii")))
    return _b32(hmac.new(secret, msg, hashlib.sha256).digest())[:_MAC_CHARS]


def local_part(email_id: str, recipient: str, secret: bytes) -> str:
    if not secret:
        raise ValueError("VERP secret must not be empty")
    eid = email_id.upper()
    if not is_email_id(eid):
        raise ValueError(f"not an email_id: {email_id!r}")
    rhash = recipient_hash(recipient)
    return f"{PREFIX}-{eid.lower()}-{rhash}-{_mac(secret, eid, rhash)}"


def encode(email_id: str, recipient: str, domain: str, secret: bytes) -> str:
    """The return path (MAIL FROM) for ``recipient`` of message ``email_id``."""
    if not domain or "@" in domain:
        raise ValueError(f"bad bounce domain: {domain!r}")
    return f"{local_part(email_id, recipient, secret)}@{domain}"


def decode(address: str, secrets: bytes | Sequence[bytes]) -> VerpToken | None:
    """The (email_id, recipient hash) of a return path we made, or None if it is not ours or forged.

    Accepts ``<...>`` brackets and any letter case; tries each secret (key rotation) with a
    constant-time comparison.
    """
    keys = [secrets] if isinstance(secrets, bytes | bytearray) else list(secrets)
    addr = address.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, at, _domain = addr.rpartition("@")
    if not at:
        return None
    m = _LOCAL.match(local.lower())
    if not m:
        return None
    eid, rhash, mac = m["id"].upper(), m["rcpt"], m["mac"]
    if not is_email_id(eid):  # pragma: no cover - the pattern already restricts the alphabet
        return None
    ok = False
    for key in keys:
        if key:
            ok |= hmac.compare_digest(_mac(bytes(key), eid, rhash), mac)
    return VerpToken(eid, rhash) if ok else None


def read_verp_secret(path: Path) -> bytes:
    """The HMAC key from its file (hex, written by `mailrelay init`)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing return-path key (run `mailrelay init`)")
    return bytes.fromhex(path.read_text().strip())
