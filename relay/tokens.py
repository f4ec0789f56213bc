"""Signed tokens of the links we put in mail (unsubscribe, open, click) and of the unsubscribe mailbox.

Link token (the last path segment of ``PUBLIC_URL/u/TOKEN``, ``/o/TOKEN``, ``/c/TOKEN``)::

    base64url(payload) "." base64url(mac)
      payload  JSON [1, kind, email_id, recipient, api_user, issued, link]
               kind "u" | "o" | "c"; issued: epoch seconds; link: the original URL (clicks) or ""
      mac      128 bits of HMAC-SHA256(secret, "mailrelay-link-v1" | payload)

Everything the endpoints need is in the token, signed, so a click needs no database read and the
redirect target can only be a URL we signed (no open redirect). The recipient is readable by whoever
holds the mail (base64, not encrypted): the link is only in that recipient's copy.

Unsubscribe mailbox (``List-Unsubscribe: <mailto:LOCAL@FEEDBACK_DOMAIN>``), 58 octets::

    unsub-<email_id>-<rcpt>-<mac>   like the return path (relay/verp.py): rcpt is the 40-bit
                                    recipient hash, mac 80 bits of HMAC(secret, "mailrelay-unsub-v1"...)

Key rotation: the key file holds one hex key a line, newest first; tokens are signed with the
first and verified with each (constant-time comparison), so a key can be retired after
``web.token_max_age``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from relay.ids import is_email_id
from relay.verp import recipient_hash

_LINK_CONTEXT = b"mailrelay-link-v1\0"
_MAILTO_CONTEXT = b"mailrelay-unsub-v1"
_MAC_BYTES = 16
MAX_TOKEN = 4096  # characters; anything longer is refused before it is decoded
MAX_LINK = 2048  # a longer URL is left as it is (not tracked)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{22}")
MAILTO_PREFIX = "unsub"
_MAILTO = re.compile(rf"{MAILTO_PREFIX}-([0-9a-hjkmnp-tv-z]{{26}})-([a-z2-7]{{8}})-([a-z2-7]{{16}})")


class LinkKind(StrEnum):
    UNSUBSCRIBE = "u"
    OPEN = "o"
    CLICK = "c"


@dataclass(frozen=True, slots=True)
class LinkToken:
    kind: LinkKind
    email_id: str
    recipient: str
    api_user: str
    issued: int  # epoch seconds
    link: str = ""  # the original URL of a click token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=16)
def _keyed(secret: bytes) -> hmac.HMAC:
    # HMAC state after the key and the context: each token copies it (no key schedule per request)
    return hmac.new(secret, _LINK_CONTEXT, hashlib.sha256)


def _mac(secret: bytes, payload: bytes) -> bytes:
    h = _keyed(secret).copy()
    h.update(payload)
    return h.digest()[:_MAC_BYTES]


def encode(tok: LinkToken, secret: bytes) -> str:
    if not secret:
        raise ValueError("link token secret must not be empty")
    payload = json.dumps([1, tok.kind.value, tok.email_id, tok.recipient, tok.api_user, tok.issued, tok.link],
                         ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def decode(text: str, secrets: Sequence[bytes], kind: LinkKind, *, now: float, max_age: float) -> LinkToken | None:
    """The token's content, or None when it is malformed, forged, of another kind or expired."""
    if len(text) > MAX_TOKEN or not _TOKEN.fullmatch(text):
        return None
    body, _, mac_text = text.partition(".")
    try:
        payload, mac = _unb64(body), _unb64(mac_text)
    except (binascii.Error, ValueError):
        return None
    if _b64(payload) != body or _b64(mac) != mac_text:  # one spelling per token (unused low bits set)
        return None
    ok = False
    for key in secrets:
        if key:
            ok |= hmac.compare_digest(_mac(key, payload), mac)
    if not ok:
        return None
    try:
        v, k, email_id, recipient, api_user, issued, link = json.loads(payload)
    except (ValueError, TypeError):
        return None
    if v != 1 or k != kind.value or not all(isinstance(x, str) for x in (email_id, recipient, api_user, link)):
        return None
    if not isinstance(issued, int) or not now - max_age <= issued <= now + 300:
        return None
    return LinkToken(kind, email_id, recipient, api_user, issued, link)


def _mailto_mac(secret: bytes, email_id: str, rhash: str) -> str:
    msg = b"\0".join((_MAILTO_CONTEXT, email_id.encode("ascii"), rhash.encode("ascii")))
    return base64.b32encode(hmac.new(secret, msg, hashlib.sha256).digest()).decode("ascii").lower()[:16]


def mailto_local(email_id: str, recipient: str, secret: bytes) -> str:
    """The local part of the unsubscribe mailbox of ``recipient`` of message ``email_id``."""
    eid = email_id.upper()
    if not secret or not is_email_id(eid):
        raise ValueError(f"cannot make an unsubscribe address for {email_id!r}")
    rhash = recipient_hash(recipient)
    return f"{MAILTO_PREFIX}-{eid.lower()}-{rhash}-{_mailto_mac(secret, eid, rhash)}"


def decode_mailto(local: str, secrets: Sequence[bytes]) -> tuple[str, str] | None:
    """(email_id, recipient hash) of an unsubscribe mailbox we made, or None."""
    m = _MAILTO.fullmatch(local.lower()) if len(local) <= 64 else None
    if m is None:
        return None
    eid, rhash, mac = m[1].upper(), m[2], m[3]
    ok = False
    for key in secrets:
        if key:
            ok |= hmac.compare_digest(_mailto_mac(key, eid, rhash), mac)
    return (eid, rhash) if ok and is_email_id(eid) else None


def read_secrets(path: Path) -> list[bytes]:
    """The keys of the token key file (hex, one a line, newest first; written by `mailrelay init`)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing link token key (run `mailrelay init`)")
    keys = [bytes.fromhex(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    if not keys:
        raise ValueError(f"{path}: no key in the link token key file")
    return keys
