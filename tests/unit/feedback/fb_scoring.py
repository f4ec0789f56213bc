"""Scoring of the feedback parser against the Sisimai-derived corpus (rules of its README).

Shared by ``test_fb_corpus.py`` and ``bench/feedback_parse.py``; not a test module itself.

Two views of the same comparison:
- per sample: :func:`differences` lists every field of every sample that differs from its label
  (the corpus test accepts only those listed, with a reason, in ``corpus_exceptions.toml``);
- grouped cross-validation: :func:`grouped_cv` holds out one family (the file-name prefix:
  ``lhost-postfix``, ``rhost-google``, ``rfc3464``, ...) at a time and scores the classifier on
  it. The rules are hand-written and no rule, threshold or weight is fitted from the corpus, so
  every fold uses the same rules and a fold's figure is what they score on its held-out family;
  the headline sums the held-out families (micro) and also averages them (macro: each family
  counts once, so the many Postfix/Sendmail samples cannot hide a family the rules do not read).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "feedback"
EXCEPTIONS = Path(__file__).resolve().parent / "corpus_exceptions.toml"
SUMMARY: list[str] = []  # filled by the corpus test, shown by conftest.py
FIELDS = ("kind", "recipient", "status", "smtp_code", "class", "category")
_NUMBER = re.compile(r"-\d+$")


@dataclass(frozen=True)
class Difference:
    sample: str  # file stem, "lhost-postfix-01"
    field: str
    got: str
    label: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.sample}: {self.field} {self.got} != {self.label}{(' ' + self.detail) if self.detail else ''}"


@dataclass
class Score:
    right: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    misses: list[Difference] = field(default_factory=list)

    def add(self, name: str, ok: bool, miss: Difference) -> None:
        self.total[name] += 1
        if ok:
            self.right[name] += 1
        else:
            self.misses.append(miss)

    def accuracy(self, name: str) -> float:
        return self.right[name] / self.total[name] if self.total[name] else 1.0

    def table(self) -> str:
        rows = [f"  {n:<10} {self.right[n]:>4}/{self.total[n]:<4} {100 * self.accuracy(n):6.2f}%" for n in FIELDS]
        return "feedback corpus, fit on every sample (not evidence of generalisation):\n" + "\n".join(rows)


def family(file: str) -> str:
    """The sending software or provider family of a sample: its file name without the number."""
    return _NUMBER.sub("", Path(file).stem)


def load_labels(root: Path = FIXTURES) -> list[dict[str, Any]]:
    with (root / "labels.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _s(value: object) -> str:
    return "null" if value is None else str(value)


def score(results: Callable[[Path], dict[str, Any]], root: Path = FIXTURES,
          labels: list[dict[str, Any]] | None = None) -> Score:
    """``results(path)`` returns one `feedback classify --json` object for a sample."""
    s = Score()
    for label in labels if labels is not None else load_labels(root):
        got = results(root / label["file"])
        name = Path(label["file"]).stem
        s.add("kind", got.get("kind") == label["kind"], Difference(name, "kind", _s(got.get("kind")), label["kind"]))
        recipients = {r.lower() for r in label.get("recipients") or []}
        rcpt = (got.get("recipient") or "").lower() or None
        if recipients:
            s.add("recipient", rcpt in recipients,
                  Difference(name, "recipient", _s(rcpt), " | ".join(sorted(recipients))))
        else:
            s.add("recipient", rcpt is None, Difference(name, "recipient", _s(rcpt), "null"))
        entry = label
        for e in label.get("entries") or []:
            if (rcpt and (e.get("recipient") or "").lower() == rcpt) or rcpt in [a.lower() for a in e.get(
                    "alternates") or []]:
                entry = {**label, **e}
                break
        if entry.get("status") is not None:
            s.add("status", got.get("status") == entry["status"],
                  Difference(name, "status", _s(got.get("status")), entry["status"]))
        if entry.get("replycode") is not None:
            s.add("smtp_code", got.get("smtp_code") == int(entry["replycode"]),
                  Difference(name, "smtp_code", _s(got.get("smtp_code")), str(entry["replycode"])))
        s.add("class", got.get("class") == entry.get("expected_class"),
              Difference(name, "class", _s(got.get("class")), _s(entry.get("expected_class"))))
        if entry.get("expected_class") == "soft_bounce":
            s.add("category", got.get("category") == entry.get("expected_category"),
                  Difference(name, "category", _s(got.get("category")), _s(entry.get("expected_category")),
                             f"[{entry.get('sisimai_reason')}] rule={got.get('rule')} "
                             f"diag={str(got.get('diagnostic'))[:110]!r}"))
    return s


@dataclass(frozen=True)
class GroupedCV:
    folds: dict[str, Score]  # held-out family -> its score

    def micro(self, name: str) -> tuple[int, int]:
        return (sum(s.right[name] for s in self.folds.values()), sum(s.total[name] for s in self.folds.values()))

    def macro(self, name: str) -> float:
        scored = [s.accuracy(name) for s in self.folds.values() if s.total[name]]
        return sum(scored) / len(scored) if scored else 1.0

    def headline(self) -> str:
        lines = [f"feedback corpus, GROUPED CROSS-VALIDATION (headline): {len(self.folds)} families held out one at "
                 "a time; hand-written rules, nothing fitted, so every fold runs the same rules"]
        for name in FIELDS:
            right, total = self.micro(name)
            pct = 100 * right / total if total else 100.0
            lines.append(f"  {name:<10} held-out {right:>4}/{total:<4} {pct:6.2f}%   "
                         f"mean over families {100 * self.macro(name):6.2f}%")
        worst = sorted(((s.accuracy("category"), fam) for fam, s in self.folds.items() if s.total["category"]))[:5]
        lines.append("  weakest held-out families (category): "
                     + ", ".join(f"{fam} {100 * acc:.0f}%" for acc, fam in worst))
        return "\n".join(lines)


def grouped_cv(results: Callable[[Path], dict[str, Any]], root: Path = FIXTURES) -> GroupedCV:
    labels = load_labels(root)
    families = sorted({family(label["file"]) for label in labels})
    # If a rule or threshold were ever fitted from data, it would be fitted here on
    # ``[l for l in labels if family(l["file"]) != held_out]`` — never on the held-out family.
    return GroupedCV({held_out: score(results, root, [label for label in labels
                                                      if family(label["file"]) == held_out])
                      for held_out in families})


def load_exceptions(path: Path = EXCEPTIONS) -> dict[tuple[str, str], dict[str, str]]:
    """Reviewed differences: (sample, field) -> {got, label, reason}."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    out: dict[tuple[str, str], dict[str, str]] = {}
    for item in data.get("exception", []):
        key = (item["sample"], item["field"])
        if key in out:
            raise ValueError(f"{path}: {key} listed twice")
        if not str(item.get("reason", "")).strip():
            raise ValueError(f"{path}: {key} has no reason")
        out[key] = item
    return out
