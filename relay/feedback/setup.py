"""Build the feedback stage from the configuration (called by the composition root and the CLI)."""

from __future__ import annotations

from relay.config import Config, parse_duration
from relay.feedback.inbox import FeedbackInbox
from relay.feedback.ingest import FeedbackIngestor
from relay.feedback.parse import parse
from relay.metrics import Metrics
from relay.rules import load_tencent_rules
from relay.verp import read_verp_secret
from storage.protocols import Storage


def build_ingestor(cfg: Config, storage: Storage, metrics: Metrics | None = None) -> FeedbackIngestor:
    inbox = FeedbackInbox(cfg.path("feedback"), fsync=cfg.spool.fsync)
    inbox.prepare()
    key = cfg.path(cfg.delivery.verp_secret_file)
    secrets = [read_verp_secret(key)] if key.exists() else []
    return FeedbackIngestor(storage, secrets, load_tencent_rules(), inbox, parse, metrics,
                            parse_budget=parse_duration(cfg.feedback.parse_budget, "feedback.parse_budget"))
