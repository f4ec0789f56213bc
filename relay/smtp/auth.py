"""SMTP AUTH against API users: key verification, a verified-credential cache, failure throttling.

- Keys are checked with scrypt in a worker thread (never on the event loop). An unknown API_USER
  is checked against a dummy hash, so both paths cost the same.
- A successful check is cached under an HMAC of the key with a per-process secret (the key itself
  is never kept). Without it, one connection per message at hundreds of messages per second would
  need a core per 30 messages/s for scrypt alone. After ``CACHE_TTL`` an entry is re-read from the
  database in the background (stale-while-revalidate: no burst of scrypts when it expires), so a
  revoked user stops working within about ``CACHE_TTL`` on other processes, at once on this one.
  Concurrent misses for the same credentials share one check; at most two scrypts run at once.
- Failures are throttled per connection (then 421 and close), per client IP and per API_USER
  across connections (sliding windows; then 421 before any key check), and each failure is
  answered after a delay.
- Nothing here logs the AUTH payload. Logs name the API_USER only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections import deque
from dataclasses import dataclass

from relay.keys import DUMMY_HASH, verify_key
from storage.protocols import AccountRepo
from storage.records import ApiUser

log = logging.getLogger("mailrelay.auth")

CACHE_TTL = 30.0  # a verified key is re-checked against the database after this ...
CACHE_MAX_STALE = 600.0  # ... in the background; after this long without a successful re-check, from scratch

REPLY_OK = "235 2.7.0 Authentication successful"
REPLY_BAD = "535 5.7.8 Authentication credentials invalid"
REPLY_TOO_MANY = "421 4.7.0 Too many authentication failures, closing connection"
REPLY_BLOCKED = "421 4.7.0 Too many authentication failures from your address or for this user, try later"
REPLY_TEMP = "454 4.7.0 Temporary authentication failure"


@dataclass(frozen=True)
class AuthDecision:
    ok: bool
    reply: str
    principal: ApiUser | None = None
    close: bool = False


class _Window:
    """Failure timestamps per key within a sliding window (bounded memory)."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def _trim(self, key: str, now: float) -> deque[float] | None:
        q = self._events.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._events[key]
            return None
        return q

    def blocked(self, key: str, now: float) -> bool:
        q = self._trim(key, now)
        return q is not None and len(q) >= self.limit

    def add(self, key: str, now: float) -> None:
        if len(self._events) >= self.max_keys and key not in self._events:
            # Shed the oldest-inserted key rather than grow without bound under a spray attack.
            self._events.pop(next(iter(self._events)))
        self._events.setdefault(key, deque(maxlen=self.limit * 2)).append(now)


class ApiUserAuthenticator:
    """Shared by every SMTP session of the process (per-IP/per-user state lives here)."""

    def __init__(
        self,
        accounts: AccountRepo,
        *,
        per_connection: int = 3,
        per_ip: int = 20,
        per_user: int = 50,
        window: float = 900.0,
        failure_delay: float = 1.0,
    ) -> None:
        self.accounts = accounts
        self.per_connection = per_connection
        self.failure_delay = failure_delay
        self._ip = _Window(per_ip, window)
        self._user = _Window(per_user, window)
        self._secret = os.urandom(32)
        self._cache: dict[tuple[str, bytes], tuple[float, ApiUser]] = {}  # -> (checked at, user)
        self._inflight: dict[tuple[str, bytes], asyncio.Future[ApiUser | None]] = {}
        self._refreshing: set[tuple[str, bytes]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scrypt_slots = asyncio.Semaphore(2)

    async def _verified_user(self, name: str, key: str, fp: bytes, now: float) -> ApiUser | None:
        """The active API user whose key this is, or None. Cached; concurrent misses share one check."""
        ck = (name, fp)
        cached = self._cache.get(ck)
        if cached is not None:
            checked_at, hit = cached
            if now - checked_at < CACHE_TTL:
                return hit
            if now - checked_at < CACHE_MAX_STALE and ck not in self._refreshing:
                # Stale: answer from the cache and re-read the user (revoked? key changed?) in the background,
                # so an expiring entry never sends every arriving session into scrypt at once.
                self._refreshing.add(ck)
                task = asyncio.create_task(self._refresh(ck, hit))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return hit
        pending = self._inflight.get(ck)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[ApiUser | None] = asyncio.get_running_loop().create_future()
        self._inflight[ck] = fut
        try:
            user = await self.accounts.get_api_user(name)
            stored = user.key_hash if user is not None and user.active else DUMMY_HASH
            async with self._scrypt_slots:  # each scrypt takes 16 MiB: bound how many run at once
                ok = await asyncio.to_thread(verify_key, key, stored)
            result = user if ok and user is not None and user.active else None
            if result is not None:
                if len(self._cache) > 50_000:
                    self._cache.clear()
                self._cache[ck] = (time.monotonic(), result)
            fut.set_result(result)
            return result
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters get it, nobody else needs to
            raise
        finally:
            del self._inflight[ck]

    async def _refresh(self, ck: tuple[str, bytes], old: ApiUser) -> None:
        try:
            user = await self.accounts.get_api_user(ck[0])
        except Exception:
            log.warning("auth refresh failed", extra={"event": "auth_refresh_failed", "api_user": ck[0]})
            return
        finally:
            self._refreshing.discard(ck)
        if user is None or not user.active or user.key_hash != old.key_hash:
            self._cache.pop(ck, None)  # revoked or key replaced: the next AUTH checks from scratch
        else:
            self._cache[ck] = (time.monotonic(), user)

    def _fingerprint(self, key: str) -> bytes:
        return hmac.new(self._secret, key.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def forget(self, api_user: str) -> None:
        """Drop cached credentials of ``api_user`` (after revoke on this node)."""
        for k in [k for k in self._cache if k[0] == api_user]:
            del self._cache[k]

    async def authenticate(self, peer_ip: str, failures_so_far: int, login: bytes, password: bytes) -> AuthDecision:
        now = time.monotonic()
        name = login.decode("utf-8", "replace")
        key = password.decode("utf-8", "surrogateescape")
        if self._ip.blocked(peer_ip, now) or self._user.blocked(name, now):
            log.warning("auth throttled", extra={"event": "auth_throttled", "api_user": name, "ip": peer_ip})
            return AuthDecision(False, REPLY_BLOCKED, close=True)
        fp = self._fingerprint(key)
        try:
            user = await self._verified_user(name, key, fp, now)
        except Exception:
            log.exception("auth lookup failed", extra={"event": "auth_storage_error", "api_user": name})
            return AuthDecision(False, REPLY_TEMP)
        if user is not None:
            return AuthDecision(True, REPLY_OK, user)
        self._ip.add(peer_ip, now)
        self._user.add(name, now)
        log.warning("auth failed", extra={"event": "auth_failed", "api_user": name, "ip": peer_ip})
        if self.failure_delay:
            await asyncio.sleep(self.failure_delay)
        if failures_so_far + 1 >= self.per_connection:
            return AuthDecision(False, REPLY_TOO_MANY, close=True)
        return AuthDecision(False, REPLY_BAD)
