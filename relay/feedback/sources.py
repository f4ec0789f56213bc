"""Readers for `mailrelay feedback ingest`: Maildir folders, mbox files and single .eml files.

Each yields (origin, raw bytes) without loading a whole mailbox into memory. A path is a Maildir if
it has ``cur``/``new`` subfolders, an mbox if it starts with a ``From `` line, else one message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

MAX_MESSAGE = 64 * 1024 * 1024


def is_maildir(path: Path) -> bool:
    return path.is_dir() and ((path / "cur").is_dir() or (path / "new").is_dir())


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    """Split on "From " separator lines (mboxrd/mboxo: ">From " quoting is undone for mboxrd)."""
    n = 0
    buf: list[bytes] = []
    size = 0
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"From ") and (buf or size == 0):
                if buf:
                    n += 1
                    yield f"{path}#{n}", b"".join(buf)
                buf, size = [], 0
                continue
            if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
                line = line[1:]
            size += len(line)
            if size <= MAX_MESSAGE:
                buf.append(line)
    if buf:
        n += 1
        yield f"{path}#{n}", b"".join(buf)


def _looks_like_mbox(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(5) == b"From "


def iter_messages(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    for path in paths:
        if is_maildir(path):
            for sub in ("new", "cur"):
                d = path / sub
                if d.is_dir():
                    for p in sorted(d.iterdir()):
                        if p.is_file():
                            yield str(p), p.read_bytes()[:MAX_MESSAGE]
        elif path.is_dir():
            for p in sorted(path.iterdir()):
                if p.is_file():
                    yield from iter_messages([p])
        elif path.is_file():
            if _looks_like_mbox(path):
                yield from _mbox(path)
            else:
                yield str(path), path.read_bytes()[:MAX_MESSAGE]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")


def count_messages(paths: list[Path]) -> int | None:
    """A quick total for the progress bar (None for mbox files: counting would read them twice)."""
    total = 0
    for path in paths:
        if is_maildir(path):
            total += sum(1 for sub in ("new", "cur") if (path / sub).is_dir() for _ in (path / sub).iterdir())
        elif path.is_dir():
            total += sum(1 for p in path.iterdir() if p.is_file())
        elif path.is_file():
            if _looks_like_mbox(path):
                return None
            total += 1
    return total
