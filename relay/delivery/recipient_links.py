"""The per-recipient links of outgoing mail: List-Unsubscribe (RFC 2369) with one-click (RFC 8058).

Added through :meth:`relay.delivery.outgoing.Outgoing.add_recipient_headers`, so they come before
the DKIM signature and are covered by it (RFC 8058 §4 wants both fields signed). Each recipient gets::

    List-Unsubscribe: <PUBLIC_URL/u/TOKEN>, <mailto:unsub-...@FEEDBACK_DOMAIN>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

unless the account or the API_USER turned list-unsubscribe off (``mailrelay accounts set``,
``mailrelay users set``) or the message did (``X-Mailrelay-Unsubscribe: off``), or the message
carries its own List-Unsubscribe.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from relay import tokens
from relay.delivery.state import DeliveryItem
from relay.tokens import LinkKind, LinkToken
from storage.protocols import AccountRepo
from storage.records import AccountSettings, ApiUserSettings

K = TypeVar("K")
V = TypeVar("V")

_MAX_LINE = 990  # RFC 5322 §2.1.1: 998 octets a line, with the field name


class SettingsCache:
    """The settings that apply to an API_USER's mail: its overrides (`mailrelay users set`) over its
    account's (`mailrelay accounts set`). Both are re-read when older than ``ttl`` seconds (a change
    on any node applies everywhere within that time); a failed read keeps the last known value."""

    def __init__(self, repo: AccountRepo, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._repo = repo
        self._ttl = ttl
        self._clock = clock
        self._accounts: dict[int, tuple[float, AccountSettings]] = {}
        self._users: dict[str, tuple[float, ApiUserSettings]] = {}
        self._lock = asyncio.Lock()

    async def _cached(self, cache: dict[K, tuple[float, V]], key: K, load: Callable[[K], Awaitable[V]]) -> V:
        hit = cache.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        async with self._lock:
            hit = cache.get(key)
            if hit is None or self._clock() - hit[0] >= self._ttl:
                try:
                    hit = (self._clock(), await load(key))
                except Exception:
                    if hit is None:
                        raise
                    hit = (self._clock() - self._ttl + 1.0, hit[1])  # stale but known: retry in 1 s
                cache[key] = hit
        return hit[1]

    async def get(self, account_id: int, api_user: str) -> AccountSettings:
        account = await self._cached(self._accounts, account_id, self._repo.get_settings)
        return (await self._cached(self._users, api_user, self._repo.get_user_settings)).over(account)


class RecipientLinks:
    def __init__(self, public_url: str, secrets: Sequence[bytes], feedback_domain: str,
                 settings: SettingsCache, clock: Callable[[], float] = time.time) -> None:
        self._url = public_url.rstrip("/")
        self._secret = secrets[0]
        self._domain = feedback_domain
        self._settings = settings
        self._clock = clock

    def token(self, kind: LinkKind, item: DeliveryItem, link: str = "") -> str:
        return tokens.encode(LinkToken(kind, item.email_id, item.recipient, item.api_user,
                                       math.floor(self._clock()), link), self._secret)

    def url(self, kind: LinkKind, item: DeliveryItem, link: str = "") -> str:
        return f"{self._url}/{kind.value}/{self.token(kind, item, link)}"

    async def unsubscribe_headers(self, item: DeliveryItem) -> Sequence[tuple[str, str]]:
        if "list-unsubscribe" in item.opt_out:
            return ()
        if not (await self._settings.get(item.account_id, item.api_user)).list_unsubscribe:
            return ()
        parts = [f"<{self.url(LinkKind.UNSUBSCRIBE, item)}>"]
        if self._domain:
            mailto = f"<mailto:{tokens.mailto_local(item.email_id, item.recipient, self._secret)}@{self._domain}>"
            if len(parts[0]) + len(mailto) + 20 < _MAX_LINE:
                parts.append(mailto)
        return (("List-Unsubscribe", ", ".join(parts)), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
