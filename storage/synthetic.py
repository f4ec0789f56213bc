"""Synthetic data for the data-API benchmarks (``bench/data_api.py``); never used by the relay.

Rows are a pure function of their index (see the ``synthetic.*`` queries), filled in chunks so a
10-million-row run reports progress and an interrupted fill resumes where the table stops.
The recipients data: half of all rows belong to one "big" account, the rest spread over the
others; request times spread evenly over ``span`` ending at ``end`` (row 0 newest); 30 % of the
recipients at gmail.com; 90 % delivered, 4 % soft bounce, 3 % invalid, 3 % still sending.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from storage import codec
from storage.store import SqlStorage

Progress = Callable[[int, int], None]


def _noop(done: int, total: int) -> None:
    pass


async def fill_recipients(
    storage: SqlStorage, total: int, *, first_account: int, accounts: int, end: datetime, span: timedelta,
    chunk: int = 250_000, progress: Progress = _noop,
) -> int:
    """Make the recipients table hold ``total`` synthetic rows (plus one send-log line each)."""
    ex = storage.executor
    have = int(await ex.fetchval("synthetic.recipients_count"))
    end_ms, span_ms = codec.to_ms(end), int(span.total_seconds() * 1000)
    for first in range(have, total, chunk):
        count = min(chunk, total - first)
        await ex.execute("synthetic.recipients", {
            "first": first, "count": count, "total": total, "end_ms": end_ms, "span_ms": span_ms,
            "first_account": first_account, "accounts": accounts})
        # this chunk's request times: (end - span*(first+count-1)/total) .. (end - span*first/total)
        lo = end_ms - ((first + count - 1) * span_ms) // total
        hi = end_ms - (first * span_ms) // total + 1
        await ex.execute("synthetic.send_log", {"lo": lo, "hi": hi})
        progress(first + count, total)
    await ex.execute("synthetic.analyze")
    return total - have


async def fill_suppressions(
    storage: SqlStorage, total: int, *, first_account: int, accounts: int, now: datetime,
    chunk: int = 500_000, progress: Progress = _noop,
) -> int:
    """Make the suppressions table hold ``total`` synthetic entries over the five lists.

    Entry i is ``s<i>@d<i % 1000>.example`` in account ``first_account + i % accounts``."""
    ex = storage.executor
    have = int(await ex.fetchval("synthetic.suppressions_count"))
    for first in range(have, total, chunk):
        count = min(chunk, total - first)
        await ex.execute("synthetic.suppressions", {
            "first": first, "count": count, "first_account": first_account, "accounts": accounts,
            "now_ms": codec.to_ms(now)})
        progress(first + count, total)
    await ex.execute("synthetic.analyze")
    return total - have
