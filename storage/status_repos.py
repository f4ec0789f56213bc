"""Recipient status records and the daily statistics kept from them (SQL; dialects via the executor)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Any

from storage import codec
from storage.executor import Executor, Op, Row
from storage.paging import DEFAULT_COUNT_CAP, page_total
from storage.protocols import Page
from storage.records import (
    LogEntry,
    LogKind,
    StatsCount,
    StatsFilter,
    Status,
    StatusFilter,
    StatusKey,
    StatusRecord,
    SubmissionRecord,
    SubStatus,
    utcnow,
)
from storage.search import EPOCH_DAY, search_where, stats_where


class SqlStatsRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    async def by_day(self, flt: StatsFilter) -> list[StatsCount]:
        where, params = stats_where(flt, self._ex.dialect)
        rows = await self._ex.fetch(self._ex.queries.render("stats.day", where), params)
        return [StatsCount(day=date.fromordinal(int(r["day"]) + EPOCH_DAY), api_user=r["api_user"],
                           domain=r["domain"], label=r["label"], status=Status(int(r["status"])),
                           sub_status=SubStatus(int(r["sub_status"])) if r["sub_status"] else None,
                           count=int(r["n"]))
                for r in rows]

    async def compact(self, batch: int = 10_000) -> int:
        return int(await self._ex.fetchval("stats.compact", {"batch": batch}))


class SqlStatusRepo:
    def __init__(self, ex: Executor, count_cap: int | None = DEFAULT_COUNT_CAP) -> None:
        self._ex = ex
        self._cap = count_cap if count_cap is not None else codec.MAX_MS

    async def record_submissions(self, batch: Sequence[SubmissionRecord]) -> None:
        now = utcnow()
        messages: dict[str, dict[str, Any]] = {}
        recipients: dict[tuple[str, str], dict[str, Any]] = {}
        logs: list[dict[str, Any]] = []
        for sub in batch:
            m = sub.message
            messages.setdefault(m.email_id, codec.message_params(m))
            for r in sub.recipients:
                rcpt = r.recipient.strip().lower()
                key = (m.email_id, rcpt)
                if key in recipients:
                    continue
                recipients[key] = codec.recipient_params(m, r, rcpt, now)
                kind = LogKind.ACCEPTED if r.status == Status.SENDING else LogKind.POLICY
                entry = LogEntry(at=m.request_time, kind=kind, text=r.reason, rule=r.rule)
                logs.append(codec.log_params(m.email_id, rcpt, entry))
        if not messages:
            return
        await self._ex.write_batch(
            [
                Op("message.insert", list(messages.values())),
                Op("recipient.insert", list(recipients.values())),
                Op("log.insert_first", logs),
            ]
        )

    async def known_email_ids(self, email_ids: Sequence[str]) -> set[str]:
        if not email_ids:
            return set()
        rows = await self._ex.fetch("message.known", {"email_ids": list(email_ids)})
        return {r["email_id"] for r in rows}

    async def search(
        self, flt: StatusFilter, *, limit: int = 100, offset: int = 0, with_log: bool = True,
        after: StatusKey | None = None, count: bool = True, oldest_first: bool = False,
    ) -> Page[StatusRecord]:
        rows, has_more = await self._rows(flt, limit, offset, after, oldest_first)
        total = None if after is not None or has_more else page_total(offset, limit, len(rows))
        if not count:
            total = offset + len(rows)
        elif total is None:
            # the total counts the whole filter, not what is left after the cursor
            where, params = search_where(flt, self._ex.dialect)
            counted = int(await self._ex.fetchval(
                self._ex.queries.render("status.count", where), {**params, "cap": self._cap}
            ))
            total = max(counted, offset + len(rows)) if rows and after is None else counted
        return Page(await self._with_logs(rows, with_log), total, has_more)

    async def _rows(
        self, flt: StatusFilter, limit: int, offset: int, after: StatusKey | None, oldest_first: bool = False
    ) -> tuple[list[Row], bool]:
        """One page of rows, and whether more follow (one row beyond the page says so, uncounted)."""
        where, params = search_where(flt, self._ex.dialect, after, oldest_first)
        query = "status.search_oldest" if oldest_first else "status.search"
        rows = await self._ex.fetch(
            self._ex.queries.render(query, where), {**params, "limit": limit + 1, "offset": offset}
        )
        return list(rows[:limit]), len(rows) > limit

    async def _with_logs(self, rows: Sequence[Row], with_log: bool) -> list[StatusRecord]:
        logs: dict[tuple[str, str], list[LogEntry]] = {}
        if with_log and rows:
            log_rows = await self._ex.fetch(
                "log.for_pairs",
                {"email_ids": [r["email_id"] for r in rows], "recipients": [r["recipient"] for r in rows],
                 "pairs": [[r["email_id"], r["recipient"]] for r in rows]},
            )
            for lr in log_rows:
                logs.setdefault((lr["email_id"], lr["recipient"]), []).append(codec.log_from_row(lr))
        return [codec.status_from_row(r, tuple(logs.get((r["email_id"], r["recipient"]), ()))) for r in rows]

    async def count(self, flt: StatusFilter) -> int:
        where, params = search_where(flt, self._ex.dialect)
        return int(await self._ex.fetchval(self._ex.queries.render("status.count_all", where), params))

    async def stream(
        self, flt: StatusFilter, *, chunk: int = 1000, with_log: bool = True
    ) -> AsyncIterator[list[StatusRecord]]:
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        after: StatusKey | None = None
        while True:
            rows, has_more = await self._rows(flt, chunk, 0, after)
            if rows:
                yield await self._with_logs(rows, with_log)
            if not has_more:
                return
            last = rows[-1]
            after = StatusKey(codec.from_ms(last["request_time"]), last["email_id"], last["recipient"])

    async def get_message(self, email_id: str, account_id: int | None = None) -> list[StatusRecord]:
        page = await self.search(
            StatusFilter(account_id=account_id, email_ids=(email_id,)), limit=1_000_000, with_log=True
        )
        return sorted(page.items, key=lambda r: r.recipient)  # one message: its recipients A to Z

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
        rcpt = recipient.strip().lower()
        now = utcnow()
        params = codec.status_update_params(email_id, rcpt, status, sub_status, reason, now, log, send_ip)
        ops = [Op("status.update", [params])]
        if log is not None:
            ops.append(Op("log.insert", [codec.log_params(email_id, rcpt, log)]))
        counts = await self._ex.write_batch(ops)
        return counts[0] > 0

    async def append_log(self, email_id: str, recipient: str, entry: LogEntry) -> None:
        await self._ex.execute("log.insert", codec.log_params(email_id, recipient.strip().lower(), entry))

    async def append_logs(self, entries: Sequence[tuple[str, str, LogEntry]]) -> None:
        if entries:
            rows = [codec.log_params(e, r.strip().lower(), entry) for e, r, entry in entries]
            await self._ex.write_batch([Op("log.insert", rows)])

    async def find_by_message_id(self, message_id: str) -> list[tuple[str, int]]:
        rows = await self._ex.fetch("message.by_message_id", {"message_id": message_id})
        return [(str(r["email_id"]), int(r["account_id"])) for r in rows]
