"""One server per data directory: `mailrelay serve` holds an exclusive ``flock`` on DIR/mailrelay.lock.

The lock is taken before the spool, the database or any socket is touched, so a second server on
the same home changes nothing and exits. The kernel drops the lock when the process ends, kill -9
included, so a leftover file never blocks a restart. The file (it holds the owner's pid, for the
error message) is never removed: unlinking a lock file would let two servers lock two different
files of the same name.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "mailrelay.lock"


class HomeLocked(Exception):
    """Another process holds the lock of this home."""

    def __init__(self, home: Path, pid: str) -> None:
        super().__init__(f"another server is running on {home} (pid {pid})")
        self.home = home
        self.pid = pid


class HomeLock:
    """The held lock; released by :meth:`release` (or at process exit)."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def lock_home(home: Path, shown_as: Path | None = None) -> HomeLock:
    """Take the lock of ``home`` or raise :class:`HomeLocked` naming the holder's pid.

    ``shown_as`` is how the error names the home (the path the operator gave)."""
    path = home / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise HomeLocked(shown_as or home, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return HomeLock(fd, path)
