"""Moved to :mod:`relay.service.times` (shared by the HTTP API and the console); kept importable here for
code written against the old path."""

from relay.service.times import (
    plain,
    zoned,
)

__all__ = [
    "plain",
    "zoned",
]
