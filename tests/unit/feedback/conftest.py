"""Show the feedback corpus accuracy table in pytest's terminal summary (also without -s)."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    import fb_scoring

    if fb_scoring.SUMMARY:
        terminalreporter.write_sep("-", "feedback parser corpus")
        for line in fb_scoring.SUMMARY:
            terminalreporter.write_line(line)
