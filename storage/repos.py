"""The account, list, label, send-request, feedback, export and DKIM repositories, implemented ONCE,
against the Executor protocol and named queries (statuses and statistics: ``storage/status_repos.py``).

No SQL text lives here: statements are named (``storage/sql/queries.sql``); the only dynamic SQL
is the status-search WHERE clause from ``storage/search.py``. Record <-> row conversion (times as
epoch milliseconds, enums as values) is ``storage/codec.py``'s job.

Normalisation done here, so every caller gets the same behaviour: suppression values and status
recipients/domains are stored lower-cased.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from storage import codec
from storage.errors import Conflict, StorageError
from storage.executor import Executor, Op
from storage.paging import DEFAULT_COUNT_CAP, page_total
from storage.protocols import Page, SendClaim
from storage.records import (
    ALL_API_USERS,
    Account,
    AccountSettings,
    ApiUser,
    ApiUserSettings,
    DkimKey,
    ExportTask,
    FeedbackEffects,
    Label,
    ListKind,
    StatusFilter,
    SuppressionEntry,
    SuppressionHits,
    utcnow,
)
from storage.status_repos import SqlStatusRepo

#: Lists whose entries may name a whole receiving domain (SPEC §3, §7).
DOMAIN_KINDS = frozenset({ListKind.BLOCK, ListKind.NO_INTERCEPTION})
_REPORT_RETRIES = 50


class SqlAccountRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    async def ensure_account(self, name: str) -> Account:
        row = await self._ex.fetchrow("account.ensure", {"name": name, "created_at": codec.to_ms(utcnow())})
        assert row is not None
        return codec.account_from_row(row)

    async def get_account(self, name: str) -> Account | None:
        row = await self._ex.fetchrow("account.get_by_name", {"name": name})
        return None if row is None else codec.account_from_row(row)

    async def get_account_by_id(self, account_id: int) -> Account | None:
        row = await self._ex.fetchrow("account.get_by_id", {"id": account_id})
        return None if row is None else codec.account_from_row(row)

    async def list_accounts(self) -> list[Account]:
        return [codec.account_from_row(r) for r in await self._ex.fetch("account.list")]

    async def get_settings(self, account_id: int) -> AccountSettings:
        row = await self._ex.fetchrow("settings.get", {"account_id": account_id})
        return AccountSettings() if row is None else codec.settings_from_row(row)

    async def set_settings(self, account_id: int, settings: AccountSettings) -> None:
        await self._ex.execute("settings.put", codec.settings_params(account_id, settings, utcnow()))

    async def get_user_settings(self, api_user: str) -> ApiUserSettings:
        row = await self._ex.fetchrow("user_settings.get", {"api_user": api_user})
        return ApiUserSettings() if row is None else codec.user_settings_from_row(row)

    async def set_user_settings(self, api_user: str, settings: ApiUserSettings) -> None:
        await self._ex.execute("user_settings.put", codec.user_settings_params(api_user, settings, utcnow()))

    async def list_user_settings(self) -> dict[str, ApiUserSettings]:
        return {r["api_user"]: codec.user_settings_from_row(r) for r in await self._ex.fetch("user_settings.list")}

    async def add_api_user(self, name: str, account_id: int, key_hash: str) -> ApiUser:
        params = {
            "name": name,
            "account_id": account_id,
            "key_hash": key_hash,
            "created_at": codec.to_ms(utcnow()),
        }
        if await self._ex.fetchrow("api_user.insert", params) is None:
            raise Conflict(f"API user {name!r} already exists")
        user = await self.get_api_user(name)
        assert user is not None
        return user

    async def get_api_user(self, name: str) -> ApiUser | None:
        row = await self._ex.fetchrow("api_user.get", {"name": name})
        return None if row is None else codec.api_user_from_row(row)

    async def list_api_users(self, account_id: int | None = None) -> list[ApiUser]:
        if account_id is None:
            rows = await self._ex.fetch("api_user.list")
        else:
            rows = await self._ex.fetch("api_user.list_by_account", {"account_id": account_id})
        return [codec.api_user_from_row(r) for r in rows]

    async def revoke_api_user(self, name: str, at: datetime) -> bool:
        return await self._ex.execute("api_user.revoke", {"name": name, "revoked_at": codec.to_ms(at)}) > 0

    async def replace_api_user_key(self, name: str, key_hash: str) -> bool:
        return await self._ex.execute("api_user.set_key", {"name": name, "key_hash": key_hash}) > 0


class SqlSuppressionRepo:
    def __init__(self, ex: Executor, count_cap: int | None = DEFAULT_COUNT_CAP) -> None:
        self._ex = ex
        self._cap = count_cap if count_cap is not None else codec.MAX_MS

    async def hits(self, account_id: int, api_user: str, address: str, domain: str, now: datetime) -> SuppressionHits:
        rows = await self._ex.fetch(
            "suppression.hits",
            {
                "account_id": account_id,
                "address": address,
                "domain": domain,
                "api_user": api_user,
                "now": codec.to_ms(now),
            },
        )
        found: set[ListKind] = set()
        bounce_until: datetime | None = None
        for row in rows:
            kind = ListKind(row["kind"])
            if row["value"] != address and kind not in DOMAIN_KINDS:
                continue  # a domain value only counts for block and no-interception
            found.add(kind)
            if kind == ListKind.BOUNCE:
                exp = codec.opt_dt(row["expires_at"]) or codec.NEVER
                bounce_until = exp if bounce_until is None else max(bounce_until, exp)
        return SuppressionHits(
            no_interception=ListKind.NO_INTERCEPTION in found,
            complaint=ListKind.COMPLAINT in found,
            block=ListKind.BLOCK in found,
            bounce_until=bounce_until,
            unsubscribe=ListKind.UNSUBSCRIBE in found,
        )

    @staticmethod
    def _dedupe(entries: Sequence[SuppressionEntry]) -> list[dict[str, Any]]:
        # one statement may not update the same row twice (PostgreSQL ON CONFLICT); last one wins
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for e in entries:
            p = codec.suppression_params(e)
            rows[(p["account_id"], p["value"], p["kind"], p["api_user"])] = p
        return list(rows.values())

    async def add(self, entries: Sequence[SuppressionEntry]) -> int:
        rows = self._dedupe(entries)
        if rows:
            await self._ex.write_batch([Op("suppression.upsert", rows)])
        return len(rows)

    async def import_entries(self, entries: Sequence[SuppressionEntry]) -> int:
        return await self.add(entries)

    async def remove(self, account_id: int, kind: ListKind, values: Sequence[str], api_user: str | None = None) -> int:
        vals = sorted({v.strip().lower() for v in values})
        if not vals:
            return 0
        params: dict[str, Any] = {"account_id": account_id, "kind": str(ListKind(kind).value), "values": vals}
        if api_user is None:
            return await self._ex.execute("suppression.delete_any_user", params)
        return await self._ex.execute("suppression.delete", {**params, "api_user": api_user})

    async def list(
        self,
        account_id: int,
        kind: ListKind,
        *,
        value: str | None = None,
        api_user: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[SuppressionEntry]:
        params: dict[str, Any] = {
            "account_id": account_id,
            "kind": str(ListKind(kind).value),
            "api_user": api_user,
            "start": codec.MIN_MS if start is None else codec.to_ms(start),
            "end": codec.MAX_MS if end is None else codec.to_ms(end),
        }
        if value is not None:
            params["value"] = value.strip().lower()
        page_q, count_q = (
            ("suppression.list_value", "suppression.count_value")
            if value
            else (
                "suppression.list",
                "suppression.count",
            )
        )
        rows = await self._ex.fetch(page_q, {**params, "limit": limit, "offset": offset})
        items = [codec.suppression_from_row(r) for r in rows]
        total = page_total(offset, limit, len(items))
        if total is None:
            extra = {} if value else {"cap": self._cap}
            counted = int(await self._ex.fetchval(count_q, {**params, **extra}))
            total = max(counted, offset + len(items)) if items else counted
        return Page(items, total)

    async def report_not_exist(
        self,
        account_id: int,
        address: str,
        now: datetime,
        expiry_for: Callable[[int], timedelta],
        reason: str = "",
    ) -> SuppressionEntry:
        key = {
            "account_id": account_id,
            "kind": str(ListKind.BOUNCE.value),
            "value": address.strip().lower(),
            "api_user": ALL_API_USERS,
        }
        # optimistic concurrency: read N, write N+1 only if still N (no transaction needed, so the
        # expiry callable never runs while a database lock is held)
        for _ in range(_REPORT_RETRIES):
            current = await self._ex.fetchrow("suppression.get", key)
            expected = 0 if current is None else int(current["hit_count"])
            n = expected + 1
            params = {
                **key,
                "now": codec.to_ms(now),
                "expires_at": codec.to_ms(now + expiry_for(n)),
                "hit_count": n,
                "expected": expected,
                "reason": reason,
            }
            row = await self._ex.fetchrow("suppression.bump", params)
            if row is not None:
                return codec.suppression_from_row(row)
        raise StorageError(f"report_not_exist: too much contention on {address!r}")


def _like_contains(text: str) -> str:
    """A LIKE pattern (escape character ``\\``) for "contains ``text``", case-insensitively."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class SqlLabelRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    async def create(self, account_id: int, name: str, at: datetime) -> Label:
        row = await self._ex.fetchrow("label.insert", {"account_id": account_id, "name": name,
                                                       "now": codec.to_ms(at)})
        if row is None:
            raise Conflict(f"label {name!r} already exists")
        return codec.label_from_row(row)

    async def get(self, account_id: int, label_id: int) -> Label | None:
        row = await self._ex.fetchrow("label.get", {"account_id": account_id, "label_id": label_id})
        return None if row is None else codec.label_from_row(row)

    async def get_by_name(self, account_id: int, name: str) -> Label | None:
        row = await self._ex.fetchrow("label.get_by_name", {"account_id": account_id, "name": name})
        return None if row is None else codec.label_from_row(row)

    async def list(self, account_id: int, *, name_contains: str = "", offset: int = 0,
                   limit: int = 100) -> Page[Label]:
        params = {"account_id": account_id, "pattern": _like_contains(name_contains)}
        rows = await self._ex.fetch("label.list", {**params, "offset": offset, "limit": limit})
        items = [codec.label_from_row(r) for r in rows]
        total = page_total(offset, limit, len(items))
        if total is None:
            total = int(await self._ex.fetchval("label.count", params))
        return Page(items, total)

    async def rename(self, account_id: int, label_id: int, name: str, at: datetime) -> Label | None:
        row = await self._ex.fetchrow("label.rename", {"account_id": account_id, "label_id": label_id,
                                                       "name": name, "now": codec.to_ms(at)})
        return None if row is None else codec.label_from_row(row)

    async def delete(self, account_id: int, label_id: int) -> bool:
        return await self._ex.execute("label.delete", {"account_id": account_id, "label_id": label_id}) > 0


class SqlSendRequestRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    async def claim(self, api_user: str, request_id: str, at: datetime, keep: timedelta,
                    stale: timedelta) -> SendClaim:
        key = {"api_user": api_user, "request_id": request_id}
        row = await self._ex.fetchrow("send_request.claim", {
            **key, "now": codec.to_ms(at), "expired_before": codec.to_ms(at - keep),
            "stale_before": codec.to_ms(at - stale)})
        if row is not None:
            return SendClaim(True)
        got = await self._ex.fetchrow("send_request.get", key)
        if got is None:  # released between the two statements: the caller retries as new
            return await self.claim(api_user, request_id, at, keep, stale)
        return SendClaim(False, got["response"])

    async def complete(self, api_user: str, request_id: str, response: str) -> None:
        await self._ex.execute("send_request.complete", {"api_user": api_user, "request_id": request_id,
                                                         "response": response})

    async def release(self, api_user: str, request_id: str) -> None:
        await self._ex.execute("send_request.release", {"api_user": api_user, "request_id": request_id})

    async def purge(self, before: datetime) -> int:
        return await self._ex.execute("send_request.purge", {"before": codec.to_ms(before)})


class SqlFeedbackRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    async def mark_seen(self, key: str, at: datetime) -> bool:
        rows = await self._ex.write_batch([Op("feedback.mark_seen", [{"key": key, "seen_at": codec.to_ms(at)}])])
        return rows[0] > 0

    async def apply(self, effects: FeedbackEffects) -> bool:
        async with self._ex.transaction() as tx:
            if not await SqlFeedbackRepo(tx).mark_seen(effects.seen_key, effects.at):
                return False  # nothing written yet: the transaction commits nothing
            statuses = SqlStatusRepo(tx)
            if effects.status is not None:
                await statuses.update_status(effects.email_id, effects.recipient, effects.status, effects.sub_status,
                                             effects.reason, effects.log)
            else:
                await statuses.append_log(effects.email_id, effects.recipient, effects.log)
            lists = SqlSuppressionRepo(tx)
            if effects.entries:
                await lists.add(effects.entries)
            if effects.not_exist is not None:
                ne = effects.not_exist
                await lists.report_not_exist(ne.account_id, ne.address, effects.at, ne.expiry_for, reason=ne.reason)
        return True


class SqlExportRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    async def create(self, task_id: str, account_id: int, kind: str, flt: StatusFilter, at: datetime) -> ExportTask:
        await self._ex.execute("export.insert", {"id": task_id, "account_id": account_id, "kind": kind,
                                                 "filter": codec.filter_to_json(flt), "created_at": codec.to_ms(at)})
        task = await self.get(task_id)
        assert task is not None
        return task

    async def get(self, task_id: str, account_id: int | None = None) -> ExportTask | None:
        row = await self._ex.fetchrow("export.get", {"id": task_id})
        if row is None:
            return None
        task = codec.export_from_row(row)
        return task if account_id is None or task.account_id == account_id else None

    async def list(self, account_id: int | None, *, offset: int = 0, limit: int = 100) -> Page[ExportTask]:
        if account_id is None:
            rows = await self._ex.fetch("export.list_all", {"limit": limit, "offset": offset})
            total = await self._ex.fetchval("export.count_all")
        else:
            params = {"account_id": account_id}
            rows = await self._ex.fetch("export.list_by_account", {**params, "limit": limit, "offset": offset})
            total = await self._ex.fetchval("export.count_by_account", params)
        return Page([codec.export_from_row(r) for r in rows], int(total))

    async def claim(self, node: str, now: datetime) -> ExportTask | None:
        row = await self._ex.fetchrow("export.claim", {"node": node, "now": codec.to_ms(now)})
        return None if row is None else codec.export_from_row(row)

    async def progress(self, task_id: str, node: str, rows_done: int, rows_total: int | None) -> bool:
        params = {"id": task_id, "node": node, "rows_done": rows_done, "rows_total": rows_total}
        return await self._ex.execute("export.progress", params) > 0

    async def finish(self, task_id: str, node: str, now: datetime, rows: int, file_size: int) -> bool:
        params = {"id": task_id, "node": node, "now": codec.to_ms(now), "rows_done": rows, "file_size": file_size}
        return await self._ex.execute("export.finish", params) > 0

    async def fail(self, task_id: str, node: str, now: datetime, error: str) -> bool:
        params = {"id": task_id, "node": node, "now": codec.to_ms(now), "error": error[:2000]}
        return await self._ex.execute("export.fail", params) > 0

    async def fail_running(self, node: str, now: datetime, error: str) -> int:
        return await self._ex.execute("export.fail_running", {"node": node, "now": codec.to_ms(now),
                                                              "error": error[:2000]})

    async def retry(self, task_id: str) -> bool:
        return await self._ex.execute("export.retry", {"id": task_id}) > 0

    async def expired(self, node: str, before: datetime, limit: int = 100) -> builtins.list[ExportTask]:
        rows = await self._ex.fetch("export.expired", {"node": node, "before": codec.to_ms(before), "limit": limit})
        return [codec.export_from_row(r) for r in rows]

    async def mark_expired(self, task_id: str, now: datetime) -> bool:
        return await self._ex.execute("export.mark_expired", {"id": task_id, "now": codec.to_ms(now)}) > 0


class SqlDkimRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    async def add(self, key: DkimKey) -> DkimKey:
        if await self._ex.fetchrow("dkim.insert", codec.dkim_params(key)) is None:
            raise Conflict(f"DKIM key {key.selector!r} of {key.domain!r} already exists")
        for k in await self.list(key.domain):
            if k.selector == key.selector:
                return k
        raise StorageError(f"DKIM key {key.selector!r} of {key.domain!r} vanished after its insert")

    async def list(self, domain: str | None = None) -> builtins.list[DkimKey]:
        if domain is None:
            rows = await self._ex.fetch("dkim.list")
        else:
            rows = await self._ex.fetch("dkim.list_domain", {"domain": domain})
        return [codec.dkim_from_row(r) for r in rows]

    async def remove(self, domain: str, selector: str) -> bool:
        return await self._ex.execute("dkim.delete", {"domain": domain, "selector": selector}) > 0
