"""sd_notify without a dependency: READY=1 when listening, STOPPING=1 on SIGTERM, STATUS=...,
and the WATCHDOG=1 keep-alive pings when the unit sets ``WatchdogSec=``.

Does nothing when not started by systemd (no $NOTIFY_SOCKET, no $WATCHDOG_USEC).
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(state: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode("utf-8"))
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises),
    or None when systemd expects none from this process ($WATCHDOG_PID names another one)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


async def watchdog(interval: float) -> None:
    """Ping WATCHDOG=1 every ``interval`` seconds until cancelled.

    It runs on the event loop on purpose: a loop that is stuck (a blocking call, a busy coroutine)
    stops the pings, and systemd restarts the service after WatchdogSec.
    """
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
