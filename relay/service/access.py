"""Who is calling and whose data they may touch: customers with HTTP Basic ``api_user:api_key``,
operators with a bearer token (the HTTP API's header, the console's sign-in form).

- Basic credentials go through the SMTP authenticator: the same keys, the same verified-key cache,
  and the same failure throttle (per client IP and per API_USER; a throttled caller gets 429
  before any key check). A wrong admin token counts as a failure of the client IP too.
- A customer is scoped to its account: every handler reads ``Principal.account_id``, never a
  parameter, to decide whose data it touches. An operator sees every account and may select one
  with ``account=NAME``.
- Per-account request budgets for the heavy queries (:class:`RateLimiter`), answered 429.
- A refused credential is HTTP 401 with EngageLab's business code 30000 and a message that starts
  with EngageLab's "Authentication failed." and says what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections import deque
from dataclasses import dataclass

from aiohttp import web

from relay.service.errors import ApiError
from relay.service.wiring import HttpServices

_ADMIN_PSEUDO_USER = b""  # never a valid API_USER name: bad bearer tokens count against the IP only

SERVICES_KEY: web.AppKey[HttpServices] = web.AppKey("services", HttpServices)

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="mailrelay", charset="UTF-8"'}


@dataclass(frozen=True, slots=True)
class Principal:
    admin: bool
    account_id: int | None  # None: an operator (every account)
    account_name: str | None
    api_user: str | None  # the authenticated API_USER (customers)


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _fail(reply: str) -> ApiError:
    if reply.startswith("421"):
        return ApiError(429, "too many authentication failures from your address or for this user; try later")
    if reply.startswith("454"):  # the key check could not read the database (it does at every request)
        return ApiError(503, "temporary authentication failure: the database is unavailable; try again shortly",
                        {"Retry-After": "5"})
    return ApiError(401, "Authentication failed. Send HTTP Basic api_user:api_key", _CHALLENGE)


async def check_authorization(header: str, peer: str, services: HttpServices) -> Principal:
    """The principal of an Authorization header value from ``peer`` (also the console's sign-in)."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        token = services.admin_token
        if token and hmac.compare_digest(value.encode("utf-8", "surrogateescape"), token.encode()):
            return Principal(admin=True, account_id=None, account_name=None, api_user=None)
        outcome = await services.authenticator.authenticate(
            peer, 0, _ADMIN_PSEUDO_USER, value.encode("utf-8", "surrogateescape"))
        if outcome.reply.startswith(("421", "454")):
            raise _fail(outcome.reply)
        raise ApiError(401, "Authentication failed. The bearer token is not the operator token", _CHALLENGE)
    if scheme.lower() != "basic" or not value:
        raise ApiError(401, "Authentication failed. Send HTTP Basic api_user:api_key (or an operator's bearer token)",
                       _CHALLENGE)
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(401, "Authentication failed. Malformed Basic credentials", _CHALLENGE) from None
    login, sep, password = decoded.partition(b":")
    if not sep or not login or len(decoded) > 1024:
        raise ApiError(401, "Authentication failed. Malformed Basic credentials: expected api_user:api_key", _CHALLENGE)
    outcome = await services.authenticator.authenticate(peer, 0, login, password)
    user = outcome.principal
    if not outcome.ok or user is None:
        raise _fail(outcome.reply)
    return Principal(admin=False, account_id=user.account_id, account_name=user.account_name, api_user=user.name)


# A sub-application holding this key authenticates its own requests (the console: a session cookie).
SELF_AUTHENTICATED: web.AppKey[bool] = web.AppKey("self_authenticated", bool)


def require_admin(request: web.Request) -> Principal:
    p = principal(request)
    if not p.admin:
        raise ApiError(403, "this endpoint is for operators (admin token) only")
    return p


async def scope_account(request: web.Request, *, required: bool) -> int | None:
    """The account this request acts on: the customer's own; for an operator ``account=NAME``
    (``None`` = every account, allowed only where ``required`` is False)."""
    p = principal(request)
    name = request.query.get("account")
    if not p.admin:
        if name is not None and name != p.account_name:
            raise ApiError(403, "account: you can only act on your own account")
        return p.account_id
    if not name:
        if required:
            raise ApiError(400, "account: required for operators (the account name to act on)")
        return None
    if len(name) > 128:
        raise ApiError(400, "account: too long")
    acct = await request.app[SERVICES_KEY].storage.accounts.get_account(name)
    if acct is None:
        raise ApiError(404, f"account {name!r} does not exist")
    return acct.id


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per key (a sliding window, bounded memory)."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str, what: str) -> None:
        now = time.monotonic()
        q = self._hits.get(key)
        if q is None:
            if len(self._hits) >= self.max_keys:
                self._hits.pop(next(iter(self._hits)))
            q = self._hits[key] = deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            retry = max(1, int(q[0] + self.window - now) + 1)
            raise ApiError(429, f"rate limit exceeded: at most {self.limit} {what} per minute per account; "
                                f"retry in {retry} s", {"Retry-After": str(retry)})
        q.append(now)


SEARCH_LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("search_limiter", RateLimiter)
EXPORT_LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("export_limiter", RateLimiter)
