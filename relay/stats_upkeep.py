"""Keeps the delivery-statistics counters compact: every few seconds each node folds the changes
the database recorded (``status_stats_delta``, PostgreSQL) into the counters. The answers never
depend on it (a query sums both); it only keeps the change log small. Several nodes may run it at
once: each change is folded exactly once."""

from __future__ import annotations

import asyncio
import logging

from storage.errors import StorageError
from storage.protocols import Storage

log = logging.getLogger("mailrelay.stats")

INTERVAL = 5.0
BATCH = 10_000
MAX_BATCHES = 100  # per round: a backlog is worked off over several rounds, never in one long burst


async def compact_stats(storage: Storage, interval: float = INTERVAL) -> None:
    while True:
        try:
            for _ in range(MAX_BATCHES):
                if await storage.stats.compact(BATCH) == 0:
                    break
        except StorageError as e:  # the database went away for a moment: the next round retries
            log.warning(f"statistics compaction failed: {e}", extra={"event": "stats_compact_error"})
        await asyncio.sleep(interval)
