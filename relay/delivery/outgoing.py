"""What goes on the wire for one recipient: the spooled content plus the headers added at delivery,
with the DKIM signature added last.

Order, for each attempt (:meth:`Outgoing.prepare`):

0. the content through the transforms registered with :meth:`Outgoing.add_body_transform`
   (open and click tracking rewrites HTML parts: ``relay/delivery/tracking.py``);
1. message-level headers, when absent: ``Feedback-ID: LABEL:API_USER:ACCOUNT:mailrelay`` (Gmail's
   feedback loop groups complaints by it; LABEL is the message's label, else ``default``);
2. per-recipient headers from the functions registered with :meth:`Outgoing.add_recipient_headers`
   (e.g. List-Unsubscribe and List-Unsubscribe-Post, which RFC 8058 wants signed), unless the
   message already has a field of that name;
3. the DKIM signature (``relay/dkim.py``), when a key matches the From domain (see
   :func:`choose_key`). Nothing is added after it.

Added fields go at the end of the header block (trace fields such as Received stay on top); the
DKIM-Signature goes first. A message without per-recipient headers is signed once per (message,
key) and the signature reused for its other recipients and retries (a small LRU per node).

Keys come from the database (every node signs with the same keys): :class:`DkimKeys` holds a
snapshot of the whole table and reloads it when it is older than ``delivery.dkim_cache_ttl``, so a
`mailrelay dkim add` on any node applies everywhere within that time. Where a signature is
computed: see :class:`Signer`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from email.utils import getaddresses

from relay import dkim
from relay.delivery.state import DeliveryItem
from relay.delivery.wireformat import to_crlf
from relay.headers import find_header_end, header_fields
from storage.protocols import AccountRepo, DkimRepo
from storage.records import DkimKey

log = logging.getLogger("mailrelay.delivery.outgoing")

#: A per-recipient header source: (name, value) pairs to add for this recipient, before signing.
RecipientHeaders = Callable[[DeliveryItem], Awaitable[Sequence[tuple[str, str]]]]
#: A per-recipient body transform (CRLF content in, CRLF content out; the same object when unchanged).
BodyTransform = Callable[[DeliveryItem, bytes], Awaitable[bytes]]

FEEDBACK_ID_SENDER = "mailrelay"
_FBL_FIELD = re.compile(r"[^A-Za-z0-9._@+-]")
_MESSAGE_CACHE = 4096
#: Messages at least this large are signed in the worker processes (see :class:`Signer`): below
#: it, canonicalisation holds the GIL for under ~2 ms.
POOL_MIN_BYTES = 64 * 1024


class OutgoingUnavailable(Exception):
    """The message cannot be prepared now (keys not loadable, signer down): retry later."""


class DkimKeys:
    """The DKIM keys of the database, reloaded when the snapshot is older than ``ttl`` seconds."""

    def __init__(self, repo: DkimRepo, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._repo = repo
        self._ttl = ttl
        self._clock = clock
        self._keys: tuple[DkimKey, ...] | None = None
        self._loaded_at = -math.inf
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._keys is not None and self._clock() - self._loaded_at < self._ttl

    def known_empty(self) -> bool:
        """No key at all, by a snapshot still fresh: nothing can be signed, no need to look."""
        return self._fresh() and not self._keys

    async def current(self) -> tuple[DkimKey, ...]:
        if self._fresh():
            assert self._keys is not None
            return self._keys
        async with self._lock:  # one reload at a time; the others wait for its result
            if not self._fresh():
                try:
                    self._keys = tuple(await self._repo.list())
                except Exception as e:
                    if self._keys is None:
                        raise OutgoingUnavailable(f"DKIM keys not readable: {e}") from e
                    # Stale keys sign correctly unless one was just rotated; better than no signing.
                    log.warning("DKIM keys not readable; using the previous ones",
                                extra={"event": "dkim_keys_stale", "error": str(e)})
                self._loaded_at = self._clock()
        assert self._keys is not None
        return self._keys


def choose_key(keys: Sequence[DkimKey], from_domain: str, account_id: int) -> DkimKey | None:
    """The key for mail from ``from_domain`` sent by account ``account_id``.

    A key signs for its domain and every subdomain (d= stays the key's domain). A key bound to an
    account signs only that account's mail; an unbound one any account's. Among matches: the most
    specific domain, then a key bound to the account over an unbound one, then the newest
    (rotation: the new selector takes over as soon as it is added), then the selector's name."""
    best: DkimKey | None = None
    best_rank: tuple[int, bool, float, str] | None = None
    for k in keys:
        if k.account_id is not None and k.account_id != account_id:
            continue
        if from_domain != k.domain and not from_domain.endswith("." + k.domain):
            continue
        rank = (len(k.domain), k.account_id is not None, k.created_at.timestamp(), k.selector)
        if best_rank is None or rank > best_rank:
            best, best_rank = k, rank
    return best


class Signer:
    """Runs :func:`relay.dkim.sign` in a thread, or in a process pool (``processes`` > 0) for
    messages of :data:`POOL_MIN_BYTES` or more.

    With the RSA step in OpenSSL (``relay/dkim_openssl.py``) a signature of a few-kB message costs
    ~0.5 ms for either algorithm, less than the trip to a worker process (pickling both ways): a
    thread signs ~2x faster and the loop's lag at a steady 300 signatures/s is no worse
    (``bench/dkim_sign.py``). What remains GIL-bound is dkimpy's body canonicalisation: regular
    expressions over the whole body, each one C call that holds the GIL, ~20-30 ms per MB. In a
    thread a 1 MB message stalled the event loop 20 ms, a 10 MB one 240 ms; in the pool 7 ms. So the
    rare large message goes to the pool (started on first use) and the common small one stays in
    a thread."""

    def __init__(self, processes: int, pool_min_bytes: int = POOL_MIN_BYTES) -> None:
        self._processes = processes
        self._pool_min_bytes = pool_min_bytes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> Executor:
        if self._pool is None:
            # spawn: forking a process that runs threads (SQLite, the spool's fsync) is unsafe
            self._pool = ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def sign(self, content: bytes, names: list[str], key: DkimKey) -> bytes:
        args = (content, names, key.domain, key.selector, key.algorithm, key.private_key)
        if self._processes <= 0 or len(content) < self._pool_min_bytes:
            return await asyncio.to_thread(dkim.sign, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), dkim.sign, *args)
        except BrokenProcessPool as e:
            self._pool = None  # a worker died: the next message gets a new pool
            raise OutgoingUnavailable("DKIM signing process died") from e

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)


@dataclass(slots=True)
class _Message:
    """What one spooled message needs for every recipient (its content is immutable)."""

    names: list[str]  # header field names, in order
    from_values: list[bytes]  # the From fields' values
    added: bytes  # message-level header lines added at delivery
    signatures: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    _from_domain: str | bool | None = False  # False: not parsed yet (only needed when a key exists)

    @property
    def from_domain(self) -> str | None:
        """The single From address's domain (A-labels), or None: never signed."""
        if self._from_domain is False:
            self._from_domain = from_domain(self.from_values)
        return self._from_domain  # type: ignore[return-value]


def _split(content: bytes) -> tuple[bytes, bytes]:
    """(header block ending in CRLF or empty, the rest: blank line + body, or empty)."""
    end = find_header_end(content)
    if end == 2 and content.startswith(b"\r\n"):
        return b"", content
    if end < 0:
        return (content if content.endswith(b"\r\n") or not content else content + b"\r\n"), b""
    return content[: end - 2], content[end - 2:]


def from_domain(values: list[bytes]) -> str | None:
    """The domain of the From header when there is exactly one From field and all of its
    addresses share one domain; else None (DMARC needs one author domain to align with)."""
    if len(values) != 1:
        return None
    addrs = [a for _, a in getaddresses([values[0].decode("utf-8", "replace")]) if a]
    if not addrs or not all("@" in a for a in addrs):
        return None
    domains = {a.rpartition("@")[2].strip().lower() for a in addrs}
    if len(domains) != 1:
        return None
    try:
        return dkim.normalize_domain(domains.pop())
    except dkim.DkimError:
        return None


def _fbl_field(text: str) -> str:
    return _FBL_FIELD.sub("_", text)[:64]


def _line(name: str, value: str) -> bytes:
    clean = value.replace("\r", " ").replace("\n", " ")
    return f"{name}: {clean}\r\n".encode("utf-8", "replace")


class Outgoing:
    def __init__(self, keys: DkimKeys | None, signer: Signer, accounts: AccountRepo, *,
                 feedback_id: bool = True) -> None:
        self._keys = keys
        self._signer = signer
        self._accounts = accounts
        self._feedback_id = feedback_id
        self._recipient_headers: list[RecipientHeaders] = []
        self._transforms: list[BodyTransform] = []
        self._messages: OrderedDict[str, _Message] = OrderedDict()
        self._account_names: dict[int, str] = {}

    def add_recipient_headers(self, source: RecipientHeaders) -> None:
        self._recipient_headers.append(source)

    def add_body_transform(self, transform: BodyTransform) -> None:
        self._transforms.append(transform)

    async def _account_name(self, account_id: int) -> str:
        name = self._account_names.get(account_id)
        if name is None:
            acct = await self._accounts.get_account_by_id(account_id)
            name = acct.name if acct is not None else str(account_id)
            self._account_names[account_id] = name  # account names never change
        return name

    async def _message(self, item: DeliveryItem, head: bytes) -> _Message:
        msg = self._messages.get(item.email_id)
        if msg is not None:
            self._messages.move_to_end(item.email_id)
            return msg
        fields = header_fields(head)
        names = [n for n, _ in fields]
        added = b""
        if self._feedback_id and "feedback-id" not in names:
            account = await self._account_name(item.account_id)
            parts = (item.label or "default", item.api_user, account, FEEDBACK_ID_SENDER)
            added += _line("Feedback-ID", ":".join(_fbl_field(p) for p in parts))
            names.append("Feedback-ID")
        msg = _Message(names, [v for n, v in fields if n == "from"], added)
        self._messages[item.email_id] = msg
        if len(self._messages) > _MESSAGE_CACHE:
            self._messages.popitem(last=False)
        return msg

    async def prepare(self, item: DeliveryItem, content: bytes) -> bytes:
        """The bytes to send to ``item.recipient`` (CRLF line ends; dot-stuffing is the client's).
        Raises :class:`OutgoingUnavailable` when the message must wait (retry later)."""
        original = data = to_crlf(content)
        for transform in self._transforms:
            data = await transform(item, data)
        head, rest = _split(data)
        msg = await self._message(item, head)
        extra = b""
        names = msg.names
        if data is not original:  # the header block of this copy may differ from the cached one's
            names = [n for n, _ in header_fields(head)] + (["Feedback-ID"] if msg.added else [])
        for source in self._recipient_headers:
            for name, value in await source(item):
                if name.lower() in names:  # the customer's own field wins: never two of one
                    continue
                extra += _line(name, value)
                names = [*names, name]
        message = head + msg.added + extra + rest
        key = None
        if self._keys is not None and not self._keys.known_empty() and msg.from_domain is not None:
            key = choose_key(await self._keys.current(), msg.from_domain, item.account_id)
        if key is None:
            return message
        cache_key = (key.domain, key.selector, key.public_key)
        shared = not extra and data is original  # the same bytes for every recipient
        sig = msg.signatures.get(cache_key) if shared else None
        if sig is None:
            try:
                sig = await self._signer.sign(message, names, key)
            except dkim.DkimMessageError as e:
                # dkimpy cannot parse this header block: send it unsigned rather than hold it forever
                log.warning("message not DKIM-signed", extra={"event": "dkim_unsignable",
                                                             "email_id": item.email_id, "error": str(e)})
                sig = b""
            except dkim.DkimError as e:
                log.error("DKIM key unusable", extra={"event": "dkim_key_error", "email_id": item.email_id,
                                                      "domain": key.domain, "selector": key.selector,
                                                      "error": str(e)})
                raise OutgoingUnavailable(str(e)) from e
            if shared:
                msg.signatures[cache_key] = sig  # b"": this message cannot be signed, do not try again
        return sig + message

    async def close(self) -> None:
        await self._signer.close()
