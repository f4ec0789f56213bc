"""relay/writeback.py: the write-back hint the spool gives before its fsyncs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from relay.writeback import available, start_writeback


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_available_on_linux() -> None:
    assert available()


def test_start_writeback_on_a_dirty_file_returns_and_the_data_stays(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 10_000)
        start_writeback(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 10_000


def test_a_bad_descriptor_is_ignored() -> None:
    start_writeback(-1)  # a hint: the fsync that follows reports errors, not this
