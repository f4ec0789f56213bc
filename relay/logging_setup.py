"""Structured logs: one JSON object per line with a stable ``event`` key (or plain text).

Modules log with ``extra={"event": "...", ...}``; every extra field lands in the JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_PLAIN_TYPES = (str, int, float, bool, type(None))
# One encoder for every line: json.dumps(..., ensure_ascii=False) would build a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode



def _plain(v: object) -> object:
    """Lists of plain values stay JSON lists (e.g. the keys a reload applied); the rest is str()."""
    if isinstance(v, list | tuple) and all(isinstance(x, str | int | float | bool) for x in v):
        return list(v)
    return str(v)


class JsonFormatter(logging.Formatter):
    """One JSON object per record. Two lines per message are logged at full rate (accepted,
    delivered), so this is kept cheap: a cached timestamp per second, one shared encoder."""

    def __init__(self, fields: dict[str, str | int] | None = None) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""
        self._fields = dict(fields or {})  # on every line, e.g. which process wrote it

    def _ts(self, created: float) -> str:
        secs = int(created)
        if secs != self._second:  # strftime once per second, not per line
            self._second, self._prefix = secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        return f"{self._prefix}.{int((created - secs) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self._ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._fields,
        }
        for k, v in record.__dict__.items():
            if k not in _STD and k[0] != "_":
                doc[k] = v if isinstance(v, _PLAIN_TYPES) else _plain(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _ENCODE(doc)


class TextFormatter(logging.Formatter):
    def __init__(self, fields: dict[str, str | int] | None = None) -> None:
        super().__init__()
        self._prefix = "".join(f"[{k}={v}] " for k, v in (fields or {}).items())

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STD and not k.startswith("_")
        )
        base = f"{self._prefix}{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        out = f"{base} {extras}" if extras else base
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


def setup_logging(level: str = "info", fmt: str = "json", fields: dict[str, str | int] | None = None) -> None:
    """``fields``: added to every line (an intake worker names itself: ``process``, ``pid``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(fields) if fmt == "json" else TextFormatter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Neither format prints the process, thread or task of a record: skip collecting them
    # (os.getpid(), threading.current_thread(), asyncio.current_task() on every record).
    logging.logProcesses = logging.logMultiprocessing = logging.logThreads = False
    if hasattr(logging, "logAsyncioTasks"):
        logging.logAsyncioTasks = False
    # aiosmtpd logs every command line at INFO (AUTH payloads included in some paths): keep it quiet.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
