"""A real `mailrelay serve` subprocess, as the process-level tests start and reach it."""

from __future__ import annotations

import smtplib
import subprocess
import time
from pathlib import Path


def smtp_when_up(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> smtplib.SMTP:
    """An SMTP client connected to the server once it listens; fails with its log if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return smtplib.SMTP("127.0.0.1", port, timeout=10)
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
