"""Structured logs: one JSON object per line with a stable ``event`` key (or plain text).

Modules log with ``extra={"event": "...", ...}``; every extra field lands in the JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _plain(v: object) -> object:
    """Lists of plain values stay JSON lists (e.g. the keys a reload applied); the rest is str()."""
    if isinstance(v, list | tuple) and all(isinstance(x, str | int | float | bool) for x in v):
        return list(v)
    return str(v)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                doc[k] = v if isinstance(v, str | int | float | bool | type(None)) else _plain(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STD and not k.startswith("_")
        )
        base = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        out = f"{base} {extras}" if extras else base
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd logs every command line at INFO (AUTH payloads included in some paths): keep it quiet.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
