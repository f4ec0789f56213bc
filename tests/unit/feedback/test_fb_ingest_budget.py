"""Ingest's per-mail time budget: a mail that takes too long to examine is quarantined with the
reason, and the mails after it are examined meanwhile (issue #13 item 3)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, cast

from relay.feedback.inbox import FeedbackInbox
from relay.feedback.ingest import FeedbackIngestor
from relay.feedback.report import FeedbackReport
from relay.rules import load_tencent_rules
from storage.protocols import Storage


async def test_slow_mail_is_quarantined_and_the_others_go_on(tmp_path: Path) -> None:
    inbox = FeedbackInbox(tmp_path / "feedback", fsync=False)
    inbox.prepare()
    release = threading.Event()

    def parse(raw: bytes) -> FeedbackReport:
        if raw.startswith(b"slow"):
            release.wait(10)  # a mail the parser chews on for long
        return FeedbackReport(kind="unknown", reason="not a bounce")

    ingestor = FeedbackIngestor(cast(Storage, object()), [], load_tencent_rules(), inbox, parse,
                                parse_budget=0.3)
    t = time.perf_counter()
    slow, fast = await asyncio.gather(ingestor.ingest(b"slow mail", "test:1"),
                                      ingestor.ingest(b"fast mail", "test:2"))
    release.set()
    assert time.perf_counter() - t < 5
    assert slow.outcome == "quarantined" and "budget of 0.3 s" in slow.detail
    assert fast.outcome == "quarantined" and fast.detail == "not a bounce"
    reasons: list[tuple[str, Any]] = inbox.quarantined()
    assert any("budget" in str(r) for r in reasons)
