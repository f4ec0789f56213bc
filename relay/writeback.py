"""Start a file's write-back without waiting for it: Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``.

The spool calls it on every file of a batch before fsyncing them one by one (relay/spool_batches.py), so
their data is written together and the first fsync's journal commit carries the rest. Python's
``os`` module has no binding for it, so it is called through ctypes (which releases the GIL for
the call). It is a hint only: durability still comes from each file's fsync, which also reports
any error this call would have. Where it is missing (not Linux, no C library found) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: initiate write-out of dirty pages, do not wait


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library this process already has loaded
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load()


def available() -> bool:
    return _sync_file_range is not None


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now; returns at once, errors ignored."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)
