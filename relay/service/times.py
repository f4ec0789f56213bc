"""The time formats of EngageLab's list answers, in UTC.

EngageLab shows two: ``2021-03-01 17:24:34`` (blocks, no_interceptions) and
``2016-02-01T14:53:20+0800`` (complaints, bounces, unsubscribes, labels). mailrelay answers the
same shapes, always in UTC (``+0000`` where an offset is shown), without fractions of a second.
"""

from __future__ import annotations

from datetime import UTC, datetime


def plain(t: datetime | None) -> str | None:
    """``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if t else None


def zoned(t: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS+0000``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z") if t else None
