"""Feedback parsing benchmark: throughput of relay.feedback.parse over the corpus on one core, and
recipient extraction side by side with flufl.bounce (PyPI) on the same files in the same run.

    .venv/bin/python bench/feedback_parse.py [--rounds N] [--corpus DIR]

DIR defaults to tests/fixtures/feedback (236 Sisimai samples + labels.jsonl). Prints figures; it
is not a pass/fail test. Recipient accuracy follows the corpus README: any address of the label's
`recipients`, case-insensitive (a sample labelled with no recipient needs none reported).
"""

from __future__ import annotations

import argparse
import email
import gc
import json
import os
import sys
import time
from email.policy import compat32
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.feedback import first, parse  # noqa: E402
from relay.feedback.parse import default_classifier  # noqa: E402


def _load(corpus: Path) -> list[tuple[str, bytes, set[str]]]:
    samples = []
    with (corpus / "labels.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                label = json.loads(line)
                raw = (corpus / label["file"]).read_bytes()
                samples.append((label["file"], raw, {r.lower() for r in label.get("recipients") or []}))
    return samples


def _ok(found: list[str], expected: set[str]) -> bool:
    if not expected:
        return not found
    return bool(found) and found[0].lower() in expected


def _ok_any(found: set[str], expected: set[str]) -> bool:
    if not expected:
        return not found
    return bool({f.lower() for f in found} & expected)


def bench_ours(samples: list[tuple[str, bytes, set[str]]], rounds: int) -> tuple[float, float]:
    default_classifier()  # rules loaded once, at start-up, as in the server
    right = sum(_ok([r.recipient] if (r := first(parse(raw))) else [], exp) for _, raw, exp in samples)
    gc.collect()
    t = time.perf_counter()
    for _ in range(rounds):
        for _, raw, _ in samples:
            parse(raw)
    elapsed = time.perf_counter() - t
    return rounds * len(samples) / elapsed, right / len(samples)


def bench_flufl(samples: list[tuple[str, bytes, set[str]]], rounds: int) -> tuple[float, float, float] | str:
    try:
        from flufl.bounce import scan_message
    except ImportError as exc:  # pragma: no cover - depends on the environment
        return f"flufl.bounce is not installed ({exc}); pip install flufl.bounce"

    def scan(raw: bytes) -> set[str]:
        try:
            msg = email.message_from_bytes(raw, policy=compat32)
            return {a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in scan_message(msg)}
        except Exception:
            return set()

    results = [scan(raw) for _, raw, _ in samples]
    strict = sum(_ok(sorted(f), exp) if len(f) <= 1 else _ok_any(f, exp) for f, (_, _, exp) in zip(
        results, samples, strict=True))
    lenient = sum(_ok_any(f, exp) for f, (_, _, exp) in zip(results, samples, strict=True))
    gc.collect()
    t = time.perf_counter()
    for _ in range(rounds):
        for _, raw, _ in samples:
            scan(raw)
    elapsed = time.perf_counter() - t
    return rounds * len(samples) / elapsed, strict / len(samples), lenient / len(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests" / "fixtures" / "feedback")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    samples = _load(args.corpus)
    size = sum(len(raw) for _, raw, _ in samples)
    print(f"corpus: {len(samples)} mails, {size / 1024:.0f} KiB, {args.rounds} rounds, 1 core, "
          f"Python {sys.version.split()[0]}")
    rate, acc = bench_ours(samples, args.rounds)
    print(f"mailrelay parse : {rate:8.0f} mails/s   recipient accuracy {100 * acc:6.2f}%")
    other = bench_flufl(samples, args.rounds)
    if isinstance(other, str):
        print(f"flufl.bounce    : {other}")
    else:
        frate, facc, flen = other
        print(f"flufl.bounce    : {frate:8.0f} mails/s   recipient accuracy {100 * facc:6.2f}% "
              f"(any of its addresses: {100 * flen:.2f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
