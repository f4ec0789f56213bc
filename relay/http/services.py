"""Moved to :mod:`relay.service.wiring` (shared by the HTTP API and the console); kept importable here for
code written against the old path."""

from relay.service.wiring import (
    Authenticator,
    AuthOutcome,
    ExportFiles,
    HttpServices,
    MetricsSource,
    QueueControl,
    QueueViewLike,
    RecoveredLike,
    no_request_timeout,
)

__all__ = [
    "AuthOutcome",
    "Authenticator",
    "ExportFiles",
    "HttpServices",
    "MetricsSource",
    "QueueControl",
    "QueueViewLike",
    "RecoveredLike",
    "no_request_timeout",
]
