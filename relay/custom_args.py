"""A message's ``custom_args``: the customer's own fields, stored with the message and carried in
every webhook event of its recipients (README "Webhooks"), as EngageLab does.

Given as the ``custom_args`` object of ``POST /v1/mail/send`` / ``send_mime``, or over SMTP (and in
a ``send_mime`` message) as the header ``X-Mailrelay-Custom-Args: {"order": "1042"}``, which is
removed before delivery. Either way: a JSON object of at most 1 KB (EngageLab's limit), nested at
most :data:`MAX_DEPTH` deep, finite numbers only. Kept as compact JSON text (``None``: none given).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_BYTES = 1024  # of its compact JSON (EngageLab: "the maximum size is 1KB")
MAX_DEPTH = 5
HEADER = "x-mailrelay-custom-args"  # lower case, as relay.headers compares names


class CustomArgsError(ValueError):
    """Not a valid custom_args object; the message says why."""


def _check(v: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CustomArgsError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, dict):
        for item in v.values():
            _check(item, depth + 1)
    elif isinstance(v, list):
        for item in v:
            _check(item, depth + 1)
    elif isinstance(v, float) and not math.isfinite(v):
        raise CustomArgsError("numbers must be finite (no NaN or Infinity)")
    elif v is not None and not isinstance(v, str | int | float | bool):
        raise CustomArgsError(f"unsupported value {type(v).__name__}")


def encode(v: Any) -> str | None:
    """The stored form of a parsed ``custom_args`` value; ``None`` stays ``None``."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise CustomArgsError("expected a JSON object")
    _check(v, 1)
    text = json.dumps(v, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        raise CustomArgsError(f"{size} bytes of JSON: at most {MAX_BYTES}")
    return text if v else None  # {} is the same as none


def from_header(value: str) -> str | None:
    """The value of an ``X-Mailrelay-Custom-Args`` header: a JSON object."""
    text = value.strip()
    if len(text.encode("utf-8")) > 4 * MAX_BYTES:  # bounded before parsing (whitespace may shrink it)
        raise CustomArgsError(f"larger than {MAX_BYTES} bytes")
    try:
        parsed = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise CustomArgsError(f"not JSON ({str(e)[:80]})") from None
    return encode(parsed)


def _no_constant(name: str) -> Any:
    raise CustomArgsError("numbers must be finite (no NaN or Infinity)")


def decode(text: str | None) -> dict[str, Any]:
    """What a webhook event carries: the stored object, or ``{}``."""
    if not text:
        return {}
    try:
        v = json.loads(text)
    except ValueError:  # never written so; a damaged row must not stop the event
        return {}
    return v if isinstance(v, dict) else {}
