"""SMTP AUTH against API users: key verification, a verified-credential cache, failure throttling.

- Keys are checked with scrypt in a worker thread (never on the event loop). An unknown API_USER
  is checked against a dummy hash, so both paths cost the same.
- A successful check is cached under an HMAC of the key with a per-process secret (the key itself
  is never kept), together with the stored hash it matched. Without it, one connection per message
  at hundreds of messages per second would need a core per 30 messages/s for scrypt alone.
- Every AUTH still reads the API user's row (one primary-key lookup) and uses the cached answer
  only while the row is active with that same hash: a revoke or a key change (a new salted hash)
  applies to the very next AUTH on every node sharing the database, with no expiry to wait for.
  An authenticated session re-checks its user the same way at each MAIL (:meth:`still_valid`).
  Concurrent misses for the same credentials share one check; at most two scrypts run at once.
- Those row reads are coalesced per API_USER (:class:`_FreshReads`): callers that arrive while a
  read of the same user is in flight share the *next* read, which starts after they all arrived,
  so each still sees the row as it is after its own call began (a revoke committed before an AUTH
  or MAIL is seen by it). Under load from one API_USER this turns two reads per message
  (AUTH, MAIL) into one per read round trip.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from relay.keys import DUMMY_HASH, verify_key
from storage.protocols import AccountRepo
from storage.records import ApiUser

log = logging.getLogger("mailrelay.auth")

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

    def blocked_for(self, key: str, now: float) -> float:
        """Seconds ``key`` stays blocked with the failures seen so far (0: not blocked)."""
        q = self._trim(key, now)
        if q is None or len(q) < self.limit:
            return 0.0
        return q[-self.limit] + self.window - now

    def blocked_keys(self, now: float) -> list[tuple[str, float]]:
        return [(key, left) for key in list(self._events) if (left := self.blocked_for(key, now)) > 0]

    def add(self, key: str, now: float) -> None:
        if len(self._events) >= self.max_keys and key not in self._events:
            # Shed the oldest-inserted key rather than grow without bound under a spray attack.
            self._events.pop(next(iter(self._events)))
        self._events.setdefault(key, deque(maxlen=self.limit * 2)).append(now)


class Throttle(Protocol):
    """Failed-AUTH counts per client IP and per API_USER (sliding windows). One per node: the
    SMTP listeners and the HTTP API share it; intake workers reach the owner's (``relay/workers``)."""

    async def blocked(self, ip: str, api_user: str) -> bool: ...

    async def failed(self, ip: str, api_user: str) -> None: ...


#: Told when a client IP ("ip") or an API_USER ("user") becomes blocked, and for how many seconds.
BlockListener = Callable[[str, str, float], None]


class FailureThrottle:
    def __init__(self, per_ip: int, per_user: int, window: float) -> None:
        self._ip = _Window(per_ip, window)
        self._user = _Window(per_user, window)
        self.on_block: BlockListener | None = None  # intake workers keep a copy of what is blocked

    def blocked_now(self, ip: str, api_user: str) -> bool:
        now = time.monotonic()
        return self._ip.blocked(ip, now) or self._user.blocked(api_user, now)

    def failed_now(self, ip: str, api_user: str) -> None:
        now = time.monotonic()
        self._ip.add(ip, now)
        self._user.add(api_user, now)
        if self.on_block is not None:
            for kind, window, key in (("ip", self._ip, ip), ("user", self._user, api_user)):
                left = window.blocked_for(key, now)
                if left > 0:
                    self.on_block(kind, key, left)

    def blocked_list(self) -> list[tuple[str, str, float]]:
        """(kind, key, seconds left) of everything blocked now: a new worker's starting copy."""
        now = time.monotonic()
        return [("ip", k, left) for k, left in self._ip.blocked_keys(now)] + [
            ("user", k, left) for k, left in self._user.blocked_keys(now)]

    async def blocked(self, ip: str, api_user: str) -> bool:
        return self.blocked_now(ip, api_user)

    async def failed(self, ip: str, api_user: str) -> None:
        self.failed_now(ip, api_user)


class _FreshReads:
    """``get_api_user`` with reads shared between concurrent callers, never from before a call.

    Per name at most one read is in flight; callers that arrive meanwhile wait for the following
    read (started once the current one ended, so after they arrived). A caller therefore never
    gets a row read before its call began: sharing saves round trips, it does not add staleness."""

    def __init__(self, accounts: AccountRepo) -> None:
        self.accounts = accounts
        self._waiting: dict[str, list[asyncio.Future[ApiUser | None]]] = {}  # name -> callers of the next read
        self._tasks: set[asyncio.Task[None]] = set()  # running read rounds (strong references)

    async def get(self, name: str) -> ApiUser | None:
        fut: asyncio.Future[ApiUser | None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(name)
        if waiting is None:  # no read of this name in flight: start the reading loop
            self._waiting[name] = [fut]
            task = asyncio.create_task(self._read_rounds(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            waiting.append(fut)
        return await fut

    async def _read_rounds(self, name: str) -> None:
        waiters: list[asyncio.Future[ApiUser | None]] = []
        try:
            while waiters := self._waiting[name]:
                self._waiting[name] = []  # whoever comes now waits for the next round
                try:
                    user = await self.accounts.get_api_user(name)
                except Exception as exc:
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                else:
                    for w in waiters:
                        if not w.done():
                            w.set_result(user)
            del self._waiting[name]
        except BaseException:  # cancelled (shutdown): nobody may wait forever
            for w in waiters + self._waiting.pop(name, []):
                if not w.done():
                    w.cancel()
            raise


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
        throttle: Throttle | None = None,
    ) -> None:
        self.accounts = accounts
        self._users = _FreshReads(accounts)
        self.per_connection = per_connection
        self.failure_delay = failure_delay
        self.throttle: Throttle = throttle if throttle is not None else FailureThrottle(per_ip, per_user, window)
        self._secret = os.urandom(32)
        self._cache: dict[tuple[str, bytes], str] = {}  # (name, key fingerprint) -> the key_hash it matched
        self._inflight: dict[tuple[str, bytes], asyncio.Future[bool]] = {}  # (key_hash, fingerprint) -> check
        self._scrypt_slots = asyncio.Semaphore(2)

    async def _verified_user(self, name: str, key: str, fp: bytes) -> ApiUser | None:
        """The active API user whose key this is, or None.

        The user's row is read at every call (one primary-key lookup): a revoke or a new key is
        seen by the very next AUTH, on every node sharing the database. Only the scrypt is cached,
        and only for the hash it was checked against."""
        user = await self._users.get(name)
        ck = (name, fp)
        if user is None or not user.active:
            self._cache.pop(ck, None)
            await self._check(key, fp, DUMMY_HASH)  # same cost as a real check: no hint which names exist
            return None
        if self._cache.get(ck) == user.key_hash:
            return user
        if not await self._check(key, fp, user.key_hash):
            self._cache.pop(ck, None)
            return None
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[ck] = user.key_hash
        return user

    async def _check(self, key: str, fp: bytes, stored: str) -> bool:
        """scrypt in a worker thread; concurrent checks of the same key against the same hash share one."""
        ik = (stored, fp)
        pending = self._inflight.get(ik)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[ik] = fut
        try:
            async with self._scrypt_slots:  # each scrypt takes 16 MiB: bound how many run at once
                ok = await asyncio.to_thread(verify_key, key, stored)
            fut.set_result(ok)
            return ok
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters get it, nobody else needs to
            raise
        finally:
            del self._inflight[ik]

    async def still_valid(self, user: ApiUser) -> bool:
        """Whether ``user`` (a session's principal) is still active with the key it authenticated
        with: checked at each new transaction of an authenticated session."""
        current = await self._users.get(user.name)
        return current is not None and current.active and current.key_hash == user.key_hash

    def _fingerprint(self, key: str) -> bytes:
        return hmac.new(self._secret, key.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def forget(self, api_user: str) -> None:
        """Drop cached credentials of ``api_user`` (after a revoke on this node: frees memory only,
        a revoked user's cached answer is never used anyway)."""
        for k in [k for k in self._cache if k[0] == api_user]:
            del self._cache[k]

    async def authenticate(self, peer_ip: str, failures_so_far: int, login: bytes, password: bytes) -> AuthDecision:
        name = login.decode("utf-8", "replace")
        key = password.decode("utf-8", "surrogateescape")
        try:
            blocked = await self.throttle.blocked(peer_ip, name)
        except Exception:  # an intake worker whose owner is going away
            log.exception("auth throttle unavailable", extra={"event": "auth_storage_error", "api_user": name})
            return AuthDecision(False, REPLY_TEMP)
        if blocked:
            log.warning("auth throttled", extra={"event": "auth_throttled", "api_user": name, "ip": peer_ip})
            return AuthDecision(False, REPLY_BLOCKED, close=True)
        fp = self._fingerprint(key)
        try:
            user = await self._verified_user(name, key, fp)
        except Exception:
            log.exception("auth lookup failed", extra={"event": "auth_storage_error", "api_user": name})
            return AuthDecision(False, REPLY_TEMP)
        if user is not None:
            return AuthDecision(True, REPLY_OK, user)
        try:
            await self.throttle.failed(peer_ip, name)
        except Exception:
            log.exception("auth failure not counted", extra={"event": "auth_storage_error", "api_user": name})
        log.warning("auth failed", extra={"event": "auth_failed", "api_user": name, "ip": peer_ip})
        if self.failure_delay:
            await asyncio.sleep(self.failure_delay)
        if failures_so_far + 1 >= self.per_connection:
            return AuthDecision(False, REPLY_TOO_MANY, close=True)
        return AuthDecision(False, REPLY_BAD)
