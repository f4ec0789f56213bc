"""Scoring of the feedback parser against the Sisimai-derived corpus (rules of its README).

Shared by ``test_fb_corpus.py`` and ``bench/feedback_parse.py``; not a test module itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "feedback"
SUMMARY: list[str] = []  # filled by the corpus test, shown by conftest.py
FIELDS = ("kind", "recipient", "status", "smtp_code", "class", "category")


@dataclass
class Score:
    right: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    misses: list[str] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.total[name] += 1
        if ok:
            self.right[name] += 1
        else:
            self.misses.append(detail)

    def accuracy(self, name: str) -> float:
        return self.right[name] / self.total[name] if self.total[name] else 1.0

    def table(self) -> str:
        rows = [f"  {n:<10} {self.right[n]:>4}/{self.total[n]:<4} {100 * self.accuracy(n):6.2f}%" for n in FIELDS]
        return "feedback corpus accuracy:\n" + "\n".join(rows)


def load_labels(root: Path = FIXTURES) -> list[dict[str, Any]]:
    with (root / "labels.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def score(results: Callable[[Path], dict[str, Any]], root: Path = FIXTURES) -> Score:
    """``results(path)`` returns one `feedback classify --json` object for a sample."""
    s = Score()
    for label in load_labels(root):
        got = results(root / label["file"])
        name = Path(label["file"]).stem
        s.add("kind", got.get("kind") == label["kind"], f"{name}: kind {got.get('kind')} != {label['kind']}")
        recipients = {r.lower() for r in label.get("recipients") or []}
        rcpt = (got.get("recipient") or "").lower() or None
        if recipients:
            s.add("recipient", rcpt in recipients, f"{name}: recipient {rcpt} not in {sorted(recipients)}")
        else:
            s.add("recipient", rcpt is None, f"{name}: recipient {rcpt} != None")
        entry = label
        for e in label.get("entries") or []:
            if (rcpt and (e.get("recipient") or "").lower() == rcpt) or rcpt in [a.lower() for a in e.get(
                    "alternates") or []]:
                entry = {**label, **e}
                break
        if entry.get("status") is not None:
            s.add("status", got.get("status") == entry["status"],
                  f"{name}: status {got.get('status')} != {entry['status']}")
        if entry.get("replycode") is not None:
            s.add("smtp_code", got.get("smtp_code") == int(entry["replycode"]),
                  f"{name}: smtp_code {got.get('smtp_code')} != {entry['replycode']}")
        s.add("class", got.get("class") == entry.get("expected_class"),
              f"{name}: class {got.get('class')} != {entry.get('expected_class')}")
        if entry.get("expected_class") == "soft_bounce":
            s.add("category", got.get("category") == entry.get("expected_category"),
                  f"{name}: category {got.get('category')} != {entry.get('expected_category')} "
                  f"[{entry.get('sisimai_reason')}] rule={got.get('rule')} diag={str(got.get('diagnostic'))[:110]!r}")
    return s
