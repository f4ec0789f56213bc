"""What systemd sees of a `mailrelay serve` process: the datagrams it sends to $NOTIFY_SOCKET.

``serving`` binds the socket, starts the server with NOTIFY_SOCKET (and any extra environment,
e.g. WATCHDOG_USEC) pointing at it, and always stops the process and closes the socket.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def recv(self, timeout: float = 20) -> str:
        """The next datagram (one sd_notify state); socket.timeout when none comes in time."""
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def recv_skipping_pings(self, timeout: float = 20) -> str:
        while (msg := self.recv(timeout)) == "WATCHDOG=1":
            pass
        return msg


@contextmanager
def serving(command: Sequence[str], sock_path: Path, env: dict[str, str] | None = None
            ) -> Iterator[tuple[subprocess.Popen[bytes], NotifySocket]]:
    notify = NotifySocket(sock_path)
    proc = subprocess.Popen(list(command), stderr=subprocess.DEVNULL, cwd="/",
                            env={**os.environ, "NOTIFY_SOCKET": str(sock_path), **(env or {})})
    try:
        yield proc, notify
    finally:
        notify.sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
