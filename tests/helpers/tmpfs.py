"""A small disk that really fills: a tmpfs of a given size mounted on a directory, and a foreign
file that takes what is left of it. Used by tests/integration/test_disk_full.py and bench/soak.py.

Needs root (``mount -t tmpfs``); :func:`tmpfs_unavailable` says why not (a test fails with that
reason, it never skips).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MiB = 1024 * 1024


def tmpfs_unavailable() -> str | None:
    """Why a tmpfs cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


@contextmanager
def mounted_tmpfs(where: Path, size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes on the existing directory ``where``; unmounted on the way out
    (lazily if something still holds it open). What was in ``where`` is hidden meanwhile."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True, timeout=30)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(foreign: Path, leave: int = 0) -> None:
    """Grow ``foreign`` until its file system has at most ``leave`` bytes free (the relay may be
    writing meanwhile: grow in steps until ENOSPC instead of trusting one measurement)."""
    with open(foreign, "ab") as f:
        for step in (MiB, 4096):
            while True:
                if free_bytes(foreign.parent) - step < leave:
                    break
                try:
                    os.posix_fallocate(f.fileno(), f.seek(0, os.SEEK_END), step)
                except OSError:
                    break
