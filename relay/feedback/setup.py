"""Build the feedback stage from the configuration (called by the composition root and the CLI)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from relay.config import Config, parse_duration
from relay.feedback.classify import BounceClassifier
from relay.feedback.inbox import FeedbackInbox
from relay.feedback.ingest import FeedbackIngestor
from relay.feedback.parse import parse
from relay.feedback.report import FeedbackReport
from relay.metrics import Metrics
from relay.rules import load_tencent_rules
from relay.rules.review import ReviewRecorder
from relay.rules.site import compile_site_rules, load_reply_rules, read_site_rules, site_rules_path
from relay.verp import read_verp_secret
from storage.protocols import Storage


def load_classifier(home: Path) -> BounceClassifier:
    """The bounce classifier with the site rules of ``home`` before the packaged rules."""
    site = compile_site_rules(read_site_rules(home), str(site_rules_path(home)))
    return BounceClassifier.load(reply_rules=load_reply_rules(None), site=site)


def bounce_parser(home: Path) -> Callable[[bytes], FeedbackReport]:
    """``parse`` bound to :func:`load_classifier` (what the ingestor calls in its worker thread)."""
    return partial(parse, classifier=load_classifier(home))


def build_ingestor(cfg: Config, storage: Storage, metrics: Metrics | None = None,
                   review: ReviewRecorder | None = None) -> FeedbackIngestor:
    inbox = FeedbackInbox(cfg.path("feedback"), fsync=cfg.spool.fsync)
    inbox.prepare()
    key = cfg.path(cfg.delivery.verp_secret_file)
    secrets = [read_verp_secret(key)] if key.exists() else []
    return FeedbackIngestor(storage, secrets, load_tencent_rules(), inbox, bounce_parser(cfg.home), metrics,
                            parse_budget=parse_duration(cfg.feedback.parse_budget, "feedback.parse_budget"),
                            review=review)
