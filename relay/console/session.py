"""The console's session: a signed cookie, no server-side store.

The cookie holds who signed in (an API_USER, or the operator), when the session ends and the
session's CSRF token, as base64url JSON followed by an HMAC-SHA256 of it (``hmac`` from the
standard library) under the console key (``console.key`` in the data directory, 32 random bytes
made on first start, mode 0600). A cookie that was altered, or signed with another key, or past
its end, is no session. The cookie is HttpOnly, SameSite=Strict, Path=/console/.

The cookie is only a claim: every request re-reads the API_USER's row and compares a digest of its
key hash with the one the session was opened with (a revoked, deleted or re-keyed user ends the
session at once); for an operator, a digest of the admin token (a changed token ends operator
sessions).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

COOKIE = "mailrelay_console"
CONSOLE_KEY_FILE = "console.key"  # in the data directory
KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Session:
    api_user: str | None  # None: the operator
    expires: int  # unix seconds
    csrf: str
    token_digest: str = ""  # digest of the credential signed in with: the key's hash, or the admin token


def token_digest(token: str) -> str:
    return hashlib.sha256(b"mailrelay-console-admin:" + token.encode()).hexdigest()[:32]


def load_key(path: Path) -> bytes:
    """The signing key at ``path``, made (0600) on first use. Blocking: call from a thread."""
    try:
        key = path.read_bytes()
        if len(key) >= KEY_BYTES:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, s: Session) -> str:
    body = _b64(json.dumps([s.api_user, s.expires, s.csrf, s.token_digest], separators=(",", ":")).encode())
    mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def verify(key: bytes, cookie: str | None, now: float) -> Session | None:
    if not cookie or len(cookie) > 2048:
        return None
    body, _, mac = cookie.partition(".")
    want = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, want):
        return None
    try:
        api_user, expires, csrf, digest = json.loads(_unb64(body))
    except (binascii.Error, ValueError, TypeError):
        return None
    if not (api_user is None or isinstance(api_user, str)) or type(expires) is not int or expires <= now:
        return None
    if not isinstance(csrf, str) or not isinstance(digest, str):
        return None
    return Session(api_user, expires, csrf, digest)


def new_session(api_user: str | None, lifetime: int, now: float, credential: str = "") -> Session:
    """``credential``: the API_USER's stored key hash, or the admin token (operators)."""
    return Session(api_user, int(now) + lifetime, secrets.token_urlsafe(24), token_digest(credential))


def hmac_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def sign_text(key: bytes, text: str) -> str:
    """A short text (a one-time notice after a redirect) that the browser carries back unaltered."""
    body = _b64(text.encode())
    return f"{body}.{_b64(hmac.new(key, b'flash:' + body.encode(), hashlib.sha256).digest())}"


def verify_text(key: bytes, cookie: str) -> str | None:
    body, _, mac = cookie.partition(".")
    if len(cookie) > 2048 or not hmac.compare_digest(
            mac, _b64(hmac.new(key, b"flash:" + body.encode(), hashlib.sha256).digest())):
        return None
    try:
        return _unb64(body).decode()
    except (binascii.Error, ValueError):
        return None
