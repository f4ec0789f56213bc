"""`mailrelay feedback classify`: parse bounce/complaint mail files and print the verdicts.

No server, no database, no --home: it reads files and prints one result per file, in input
order. A file that cannot be read gives a result with kind "unknown" and an "error" key, never a
crash, a `mailrelay: FILE: ...` line on stderr, and exit status 1 once every file was tried.
(`feedback ingest`, which changes statuses and lists, is wired by the application.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.commands.feedback_ingest import add_ingest_parser
from relay.feedback import FeedbackReport, first, parse
from relay.feedback.classify import BounceClassifier

MAX_FILE_BYTES = 64 * 1024 * 1024  # read at most this much of one file (the parser looks at less)


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="feedback_command", required=True)
    sp = sub.add_parser("classify", help="parse DSN/ARF/bounce mail files and print the classification")
    sp.add_argument("files", nargs="+", metavar="FILE", help="mail files (.eml); '-' reads standard input")
    sp.add_argument("--json", action="store_true", help="one JSON object per file")
    sp.add_argument("--rules", action="append", default=[], type=Path,
                    help="extra bounce-rules file, read before the packaged one (repeatable)")
    sp.set_defaults(func=classify)
    add_ingest_parser(sub, with_home)


def report_json(name: str, report: FeedbackReport) -> dict[str, Any]:
    row = first(report)
    cls = report.feedback_class
    category = row.category if row is not None and cls == "soft_bounce" else None
    return {
        "file": name,
        "kind": report.kind,
        "recipient": row.recipient if row else None,
        "status": row.status if row else None,
        "smtp_code": row.smtp_code if row else None,
        "class": cls,
        "category": category.value if category else None,
        "sub_status": int(category.soft_bounce_sub_status) if category else None,
        "rule": (row.rule if row and (category or cls == "complaint") else "") or None,
        "diagnostic": row.diagnostic[:300] if row else None,
        "feedback_type": report.feedback_type,
        "recipients": len(report.recipients),
        "reason": report.reason or None,
        "format": report.format or None,
        "truncated": report.truncated,
        "dropped": list(report.dropped),
    }


def classify_file(path: str, classifier: BounceClassifier | None = None) -> dict[str, Any]:
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_FILE_BYTES)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES)
    except OSError as exc:
        return {"file": path, "kind": "unknown", "recipient": None, "status": None, "smtp_code": None,
                "class": None, "category": None, "sub_status": None, "rule": None,
                "error": f"{type(exc).__name__}: {exc.strerror or exc}"}
    return report_json(path, parse(raw, classifier))


def _line(obj: dict[str, Any]) -> str:
    if obj.get("error"):
        return f"{obj['file']}: error: {obj['error']}"
    parts = [f"{obj['file']}: {obj['kind']}"]
    if obj.get("class"):
        parts.append(obj["class"] + (f"/{obj['category']} ({obj['sub_status']})" if obj.get("category") else ""))
    if obj.get("recipient"):
        parts.append(obj["recipient"])
    code = " ".join(str(v) for v in (obj.get("smtp_code"), obj.get("status")) if v)
    if code:
        parts.append(code)
    if obj.get("rule"):
        parts.append(f"rule={obj['rule']}")
    if obj.get("reason"):
        parts.append(f"({obj['reason']})")
    if obj.get("truncated"):
        parts.append("truncated: " + "; ".join(obj.get("dropped") or ()))
    return "  ".join(parts)


def _utf8(line: str) -> str:
    """Valid UTF-8 whatever the mail held (a lone surrogate would stop the whole batch)."""
    return line.encode("utf-8", "replace").decode("utf-8")


def classify(args: argparse.Namespace) -> int:
    classifier = BounceClassifier.load(paths=args.rules) if args.rules else None
    unreadable = 0
    for path in args.files:
        obj = classify_file(path, classifier)
        if args.json:
            print(_utf8(json.dumps(obj, ensure_ascii=False)), flush=False)
        else:
            print(_utf8(_line(obj)))
        if obj.get("error"):
            unreadable += 1
            sys.stdout.flush()  # keep stdout and stderr in input order on a terminal
            print(f"mailrelay: {path}: cannot read it ({obj['error']})", file=sys.stderr)
    sys.stdout.flush()
    return 1 if unreadable else 0
