"""Durable storage of received feedback mail, and the quarantine.

Layout under ``<data dir>/feedback/``::

    tmp/<id>.part          being written
    incoming/<id>.eml      received and fsync'd (before the listener's 250), not yet processed
    quarantine/<id>.eml    could not be used (unparseable, unmatched, forged): kept, never dropped
    quarantine/<id>.json   why, and when

A message leaves ``incoming/`` only after processing recorded its effects (or quarantined it),
so a crash in between processes it again on start-up; effects are idempotent (feedback_seen).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from relay.ids import new_email_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FeedbackInbox:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.incoming = root / "incoming"
        self.quarantine_dir = root / "quarantine"
        self.fsync = fsync

    def prepare(self) -> None:
        for d in (self.tmp, self.incoming, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        for p in self.tmp.iterdir():
            p.unlink(missing_ok=True)

    def store_sync(self, raw: bytes) -> str:
        """Write ``raw`` durably into incoming/; returns its id."""
        mid = new_email_id()
        tmp = self.tmp / f"{mid}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.incoming / f"{mid}.eml")
        if self.fsync:
            _fsync_dir(self.incoming)
        return mid

    async def store(self, raw: bytes) -> str:
        return await asyncio.to_thread(self.store_sync, raw)

    def pending(self) -> Iterator[str]:
        for p in sorted(self.incoming.glob("*.eml")):
            yield p.stem

    def read_sync(self, mid: str) -> bytes:
        return (self.incoming / f"{mid}.eml").read_bytes()

    def done_sync(self, mid: str) -> None:
        (self.incoming / f"{mid}.eml").unlink(missing_ok=True)

    def quarantine_sync(self, raw: bytes, reason: str, origin: str, mid: str | None = None) -> str:
        """Keep ``raw`` with the reason. Moves it out of incoming/ when it came from there."""
        # Mail read from files is named by its content, so ingesting the same file twice keeps one copy.
        qid = mid or "h" + hashlib.sha256(raw).hexdigest()[:31]
        target = self.quarantine_dir / f"{qid}.eml"
        if mid is None and target.exists():
            return qid
        src = self.incoming / f"{qid}.eml"
        if mid is not None and src.exists():
            os.replace(src, target)
        else:
            target.write_bytes(raw)
        tmp = self.quarantine_dir / f".{qid}.json.tmp"
        tmp.write_text(json.dumps({"reason": reason, "origin": origin, "at": time.time()}) + "\n")
        os.replace(tmp, self.quarantine_dir / f"{qid}.json")  # readers never see a half-written reason
        return qid

    def quarantined(self) -> list[tuple[str, str]]:
        out = []
        for p in sorted(self.quarantine_dir.glob("*.json")):
            try:
                out.append((p.stem, str(json.loads(p.read_text())["reason"])))
            except (ValueError, KeyError, OSError):
                out.append((p.stem, "?"))
        return out
