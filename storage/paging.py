"""Paging rules shared by every repository that answers a page with a total."""

from __future__ import annotations

#: Default cap on the ``total`` of searches and list pages: counting is bounded so a page of a
#: huge result stays fast; a total equal to the cap means "at least this many".
DEFAULT_COUNT_CAP = 10_000


def page_total(offset: int, limit: int, got: int) -> int | None:
    """The total when the page itself proves it (last page), else None (must count)."""
    if got < limit and (got > 0 or offset == 0):
        return offset + got
    return None
