"""`mailrelay feedback ingest --home DIR PATH...`: Maildir folders, mbox files or .eml files.

Each message goes through the same ingestor as the feedback listener; running it twice on the
same input changes nothing the second time (feedback_seen keys). Unusable mail is quarantined
under DIR/feedback/quarantine with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

from relay.commands.common import CommandError, with_storage
from relay.feedback.sources import count_messages, iter_messages
from storage.protocols import Storage


def add_ingest_parser(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                      with_home: object) -> None:
    sp = sub.add_parser("ingest", help="read bounces/complaints from Maildir, mbox or .eml files")
    with_home(sp)  # type: ignore[operator]
    sp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=ingest)


def ingest(args: argparse.Namespace) -> int:
    from relay.commands.common import load_home_config
    from relay.feedback.ingest import FeedbackIngestor
    from relay.feedback.setup import build_ingestor
    from relay.rules.review import ReviewRecorder

    cfg = load_home_config(args.home)
    paths: list[Path] = args.paths
    for p in paths:
        if not p.exists():
            raise CommandError(f"{p}: no such file or folder")

    async def run(storage: Storage) -> Counter[str]:
        review = ReviewRecorder(storage.unclassified)  # bounces no phrase rule recognised
        try:
            return await ingest_all(build_ingestor(cfg, storage, review=review))
        finally:
            await review.close()

    async def ingest_all(ingestor: FeedbackIngestor) -> Counter[str]:
        counts: Counter[str] = Counter()
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=count_messages(paths), unit="mail", desc="ingest", file=sys.stderr)
        for origin, raw in iter_messages(paths):
            result = await ingestor.ingest(raw, origin)
            counts[result.outcome] += 1
            if bar is not None:
                bar.update(1)
            await asyncio.sleep(0)
        if bar is not None:
            bar.close()
        return counts

    counts = with_storage(args.home, run)
    total = sum(counts.values())
    print(f"read {total} messages: {counts['applied']} applied, {counts['duplicate']} already seen, "
          f"{counts['ignored']} ignored (auto-replies, success reports), {counts['quarantined']} quarantined")
    return 0
