"""The storage interface the application uses: one aggregate, three repositories.

Both backends (SQLite, PostgreSQL) implement exactly this, and both pass one conformance suite
(``tests/storage/``). Nothing above ``storage/`` writes SQL.

Guarantees every implementation gives:
- every method is a coroutine and never blocks the event loop (SQLite work runs in threads);
- ``StatusRepo.record_submissions`` writes all of its records in ONE transaction, and concurrent
  callers are group-committed (one commit serves every caller waiting at that moment);
- ``SuppressionRepo.hits`` answers for all five lists in ONE round trip.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from storage.records import (
    Account,
    AccountSettings,
    ApiUser,
    ApiUserSettings,
    DkimKey,
    ExportTask,
    FeedbackEffects,
    Label,
    ListKind,
    LogEntry,
    StatsCount,
    StatsFilter,
    Status,
    StatusFilter,
    StatusKey,
    StatusRecord,
    SubmissionRecord,
    SubStatus,
    SuppressionEntry,
    SuppressionHits,
)
from storage.unclassified import DecidedRecord, UnclassifiedHit, UnclassifiedReply
from storage.webhooks import Delivered, OutboxEvent, Webhook, WebhookAttempt, WebhookEvent


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: int  # highest applied migration version (0 = empty database)
    latest: int  # highest migration version this program ships

    @property
    def behind(self) -> bool:
        return self.current < self.latest


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    has_more: bool = False  # set by keyset-paged searches: records exist after the last item


class AccountRepo(Protocol):
    async def ensure_account(self, name: str) -> Account: ...
    async def get_account(self, name: str) -> Account | None: ...
    async def get_account_by_id(self, account_id: int) -> Account | None: ...
    async def list_accounts(self) -> list[Account]: ...
    async def get_settings(self, account_id: int) -> AccountSettings:
        """The account's recipient-facing settings (the defaults if it never changed them)."""
        ...
    async def set_settings(self, account_id: int, settings: AccountSettings) -> None: ...
    async def get_user_settings(self, api_user: str) -> ApiUserSettings:
        """An API_USER's overrides of its account's settings (all None if it has none)."""
        ...
    async def set_user_settings(self, api_user: str, settings: ApiUserSettings) -> None: ...
    async def list_user_settings(self) -> dict[str, ApiUserSettings]:
        """Every API_USER that has overrides (a row), by name."""
        ...
    async def add_api_user(self, name: str, account_id: int, key_hash: str) -> ApiUser:
        """Raises ``storage.errors.Conflict`` if the name exists (active or revoked)."""
        ...
    async def get_api_user(self, name: str) -> ApiUser | None: ...
    async def list_api_users(self, account_id: int | None = None) -> list[ApiUser]: ...
    async def revoke_api_user(self, name: str, at: datetime) -> bool:
        """True if an active user was revoked."""
        ...
    async def replace_api_user_key(self, name: str, key_hash: str) -> bool:
        """Give an active user a new key hash (the old key stops working); False if there is no
        active user of that name."""
        ...


class SuppressionRepo(Protocol):
    async def hits(
        self, account_id: int, api_user: str, address: str, domain: str, now: datetime
    ) -> SuppressionHits:
        """All five lists for one recipient in one round trip.

        An entry matches when its value equals ``address`` or ``domain`` (domains only count for
        block and no-interception), its api_user is ``api_user`` or ``all``, and it has not
        expired (``expires_at`` is None or > now). Lower-cased input is expected.
        """
        ...

    async def add(self, entries: Sequence[SuppressionEntry]) -> int:
        """Upsert: an existing (account, kind, value, api_user) gets the new times/reason."""
        ...

    async def remove(
        self, account_id: int, kind: ListKind, values: Sequence[str], api_user: str | None = None
    ) -> int:
        """Delete entries; ``api_user=None`` removes the value for every scope. Returns count."""
        ...

    async def list(
        self,
        account_id: int,
        kind: ListKind,
        *,
        value: str | None = None,
        api_user: str | None = None,  # only entries of exactly this scope (an API_USER, or "all")
        start: datetime | None = None,  # created_at >= start
        end: datetime | None = None,  # created_at < end
        offset: int = 0,
        limit: int = 100,
    ) -> Page[SuppressionEntry]: ...

    async def report_not_exist(
        self,
        account_id: int,
        address: str,
        now: datetime,
        expiry_for: Callable[[int], timedelta],
        reason: str = "",
    ) -> SuppressionEntry:
        """Bounce list: increment the hit count N of ``address`` (1 if new) and set its
        expiry to ``now + expiry_for(N)``. Returns the updated entry."""
        ...

    async def import_entries(self, entries: Sequence[SuppressionEntry]) -> int:
        """Bulk upsert for large uploads (one transaction per call; callers chunk)."""
        ...


class StatusRepo(Protocol):
    async def record_submissions(self, batch: Sequence[SubmissionRecord]) -> None:
        """Insert messages, one status row per recipient, and their first log line — one
        transaction for the whole batch. Idempotent per (email_id, recipient)."""
        ...

    async def known_email_ids(self, email_ids: Sequence[str]) -> set[str]:
        """Which of these messages already have rows (start-up reconciliation)."""
        ...

    async def search(
        self, flt: StatusFilter, *, limit: int = 100, offset: int = 0, with_log: bool = True,
        after: StatusKey | None = None, count: bool = True, oldest_first: bool = False,
    ) -> Page[StatusRecord]:
        """Newest first (request_time, email_id, recipient all descending; ``oldest_first``: all
        ascending, the same indexes read forwards). ``after`` pages by keyset: the records following
        that key in that order (then ``offset`` should be 0). ``total`` counts every match
        of ``flt`` (ignoring ``after``), capped; ``count=False`` skips that count (``total`` is then
        only offset + the page). ``has_more`` says whether a next page exists."""
        ...

    async def get_message(self, email_id: str, account_id: int | None = None) -> list[StatusRecord]: ...

    async def update_status(
        self,
        email_id: str,
        recipient: str,
        status: Status,
        sub_status: SubStatus | None,
        reason: str,
        log: LogEntry | None = None,
        *,
        send_ip: str | None = None,
    ) -> bool:
        """Set the status of one recipient (and append ``log`` atomically with it). An ATTEMPT log
        entry also sets send_time, mx_host and mx_ip; ``send_ip`` is our outbound address.
        False if the (email_id, recipient) row does not exist (then nothing is written)."""
        ...

    async def append_log(self, email_id: str, recipient: str, entry: LogEntry) -> None: ...
    async def append_logs(self, entries: Sequence[tuple[str, str, LogEntry]]) -> None:
        """Several (email_id, recipient, line) in one transaction; lines of unknown recipients are dropped."""
        ...

    async def find_by_message_id(self, message_id: str) -> list[tuple[str, int]]:
        """(email_id, account_id) of submitted messages with this Message-ID header."""
        ...

    async def count(self, flt: StatusFilter) -> int:
        """The exact number of records matching ``flt`` (no cap: exports' progress denominator)."""
        ...

    def stream(
        self, flt: StatusFilter, *, chunk: int = 1000, with_log: bool = True
    ) -> AsyncIterator[list[StatusRecord]]:
        """Every record matching ``flt`` in chunks of at most ``chunk``, newest first (request_time,
        email_id, recipient all descending), keyset-paged: memory is constant in the result size,
        and rows inserted during the walk either appear once or not at all."""
        ...


class FeedbackRepo(Protocol):
    async def mark_seen(self, key: str, at: datetime) -> bool:
        """True the first time ``key`` is marked; False if it was seen before (idempotent feedback)."""
        ...

    async def apply(self, effects: FeedbackEffects) -> bool:
        """Mark ``effects.seen_key`` and write the status change, the log line and the list entries
        in one transaction. False (and nothing written) if the key was seen before."""
        ...


class ExportRepo(Protocol):
    """Offline export tasks. State changes of a running task are guarded by (status, node), so a
    node that lost a task (start-up recovery elsewhere, a retry) can no longer change it."""

    async def create(self, task_id: str, account_id: int, kind: str, flt: StatusFilter, at: datetime) -> ExportTask: ...
    async def get(self, task_id: str, account_id: int | None = None) -> ExportTask | None:
        """``account_id`` given: None unless the task belongs to that account."""
        ...
    async def list(self, account_id: int | None, *, offset: int = 0, limit: int = 100) -> Page[ExportTask]:
        """Newest first; ``account_id=None``: every account (operators)."""
        ...
    async def claim(self, node: str, now: datetime) -> ExportTask | None:
        """Atomically take the oldest queued task for ``node`` (it becomes running). With several
        nodes on one database a task is claimed by exactly one."""
        ...
    async def progress(self, task_id: str, node: str, rows_done: int, rows_total: int | None) -> bool: ...
    async def finish(self, task_id: str, node: str, now: datetime, rows: int, file_size: int) -> bool: ...
    async def fail(self, task_id: str, node: str, now: datetime, error: str) -> bool: ...
    async def fail_running(self, node: str, now: datetime, error: str) -> int:
        """Start-up recovery: every task ``node`` was running becomes failed (retryable)."""
        ...
    async def retry(self, task_id: str) -> bool:
        """A failed task goes back to the queue (False if it is not failed)."""
        ...
    async def expired(self, node: str, before: datetime, limit: int = 100) -> builtins.list[ExportTask]:
        """Succeeded tasks of ``node`` that finished before ``before`` and whose file is not yet deleted."""
        ...
    async def mark_expired(self, task_id: str, now: datetime) -> bool: ...


class DkimRepo(Protocol):
    async def add(self, key: DkimKey) -> DkimKey:
        """Raises ``storage.errors.Conflict`` if (domain, selector) exists."""
        ...
    async def list(self, domain: str | None = None) -> builtins.list[DkimKey]:
        """Every key (or one domain's), newest first, with ``account_name`` filled."""
        ...
    async def remove(self, domain: str, selector: str) -> bool:
        """True if the key existed."""
        ...


class StatsRepo(Protocol):
    async def by_day(self, flt: StatsFilter) -> builtins.list[StatsCount]:
        """Per day, API_USER, domain, label, status and sub-status: the recipients counted by the
        storage as their statuses change (never a scan of the recipients)."""
        ...

    async def compact(self, batch: int = 10_000) -> int:
        """Fold up to ``batch`` pending changes into the counters (PostgreSQL; a no-op on SQLite).
        Returns how many counters were written (0: nothing was pending). Safe on several nodes."""
        ...


class LabelRepo(Protocol):
    """An account's labels. Names are unique per account (a duplicate raises ``Conflict``)."""

    async def create(self, account_id: int, name: str, at: datetime) -> Label: ...
    async def get(self, account_id: int, label_id: int) -> Label | None: ...
    async def get_by_name(self, account_id: int, name: str) -> Label | None: ...
    async def list(self, account_id: int, *, name_contains: str = "", offset: int = 0,
                   limit: int = 100) -> Page[Label]: ...
    async def rename(self, account_id: int, label_id: int, name: str, at: datetime) -> Label | None: ...
    async def delete(self, account_id: int, label_id: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class SendClaim:
    """The outcome of :meth:`SendRequestRepo.claim`: ``claimed`` — this request owns the
    request_id and sends; else ``response`` is the first request's stored answer (None: that
    request is still being processed)."""

    claimed: bool
    response: str | None = None


class SendRequestRepo(Protocol):
    """request_id of the HTTP send API: a retry within ``keep`` replays the first answer."""

    async def claim(self, api_user: str, request_id: str, at: datetime, keep: timedelta,
                    stale: timedelta) -> SendClaim:
        """Claim the id (new, older than ``keep``, or an unanswered claim older than ``stale``)."""
        ...

    async def complete(self, api_user: str, request_id: str, response: str) -> None: ...
    async def release(self, api_user: str, request_id: str) -> None:
        """Drop an unanswered claim (the request failed: a retry may send)."""
        ...

    async def purge(self, before: datetime) -> int: ...


class WebhookRepo(Protocol):
    """Event webhooks (``storage/webhooks.py``); the outbox is filled by the database's triggers."""

    async def add(self, account_id: int, url: str, events: Sequence[WebhookEvent], secret: str, batch: int,
                  at: datetime, signature: str = "body") -> Webhook: ...
    async def get(self, webhook_id: int, account_id: int | None = None) -> Webhook | None: ...
    async def list(self, account_id: int | None = None) -> builtins.list[Webhook]: ...
    async def remove(self, webhook_id: int) -> bool: ...
    async def enable(self, webhook_id: int) -> bool: ...
    async def attempts(self, webhook_id: int, limit: int = 20) -> builtins.list[WebhookAttempt]: ...
    async def claim(self, node: str, now: datetime, lease: timedelta, limit: int) -> builtins.list[OutboxEvent]: ...
    async def succeeded(self, posts: Sequence[Delivered]) -> None: ...
    async def failed(self, webhook_id: int, ids: Sequence[int], now: datetime, http_status: int | None, error: str,
                     duration_ms: int, retry_at: datetime, disable_after: timedelta) -> None: ...
    async def release(self, ids: Sequence[int]) -> None: ...
    async def release_node(self, node: str) -> int: ...
    async def outbox_size(self) -> int: ...


class UnclassifiedRepo(Protocol):
    """The review loop (``storage/unclassified.py``): replies no phrase rule recognised."""

    async def record(self, hits: Sequence[UnclassifiedHit]) -> None: ...
    async def list(self, source: str | None = None, since: datetime | None = None,
                   limit: int = 100) -> builtins.list[UnclassifiedReply]: ...
    async def remove(self, keys: Sequence[tuple[str, str]]) -> int: ...
    async def decided(self, since: datetime, after: tuple[str, str] = ("", ""),
                      limit: int = 500) -> builtins.list[DecidedRecord]: ...


class Storage(Protocol):
    accounts: AccountRepo
    labels: LabelRepo
    send_requests: SendRequestRepo
    stats: StatsRepo
    suppressions: SuppressionRepo
    statuses: StatusRepo
    feedback: FeedbackRepo
    exports: ExportRepo
    dkim: DkimRepo
    webhooks: WebhookRepo
    unclassified: UnclassifiedRepo
    url: str

    async def schema_state(self) -> SchemaState: ...
    async def ping(self) -> None:
        """Run a trivial query; raises when the database does not answer (readiness probe)."""
        ...
    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied."""
        ...
    async def close(self) -> None: ...
