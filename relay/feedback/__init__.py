"""Feedback mail (bounces and complaints): parse, classify — see :func:`relay.feedback.parse.parse`.

``parse(raw) -> FeedbackReport`` never raises; ``first(report)`` is the first recipient row.
The listener, ingest, matching (VERP) and effects live elsewhere and use these values.
"""

from relay.feedback.classify import BounceClassifier, Verdict
from relay.feedback.parse import default_classifier, parse
from relay.feedback.report import FeedbackReport, RecipientReport, first

__all__ = ["BounceClassifier", "FeedbackReport", "RecipientReport", "Verdict", "default_classifier", "first",
           "parse"]
