"""ConnectionGate: concurrent connections per client IP, shared by all sessions of one listener."""

from __future__ import annotations


class ConnectionGate:
    """Counts open connections per peer IP; refuses a new one once ``max_per_ip`` are open.

    Single-threaded by design (one event loop): no locking. ``max_per_ip <= 0`` means unlimited.
    Every successful :meth:`try_acquire` must be paired with exactly one :meth:`release`.
    """

    __slots__ = ("_counts", "max_per_ip")

    def __init__(self, max_per_ip: int) -> None:
        self.max_per_ip = max_per_ip
        self._counts: dict[str, int] = {}

    def try_acquire(self, ip: str) -> bool:
        n = self._counts.get(ip, 0)
        if 0 < self.max_per_ip <= n:
            return False
        self._counts[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        n = self._counts.get(ip, 0)
        if n <= 1:
            self._counts.pop(ip, None)
        else:
            self._counts[ip] = n - 1

    def count(self, ip: str) -> int:
        return self._counts.get(ip, 0)

    @property
    def total(self) -> int:
        return sum(self._counts.values())
