"""An intake worker's side of what the owner keeps: the hand-off of staged messages, the
per-API_USER rate budget, the AUTH failure windows and the per-IP connection counts.

Each is one request on the channel (``channel.py``); the owner answers from the same objects its
own HTTP API uses, so a budget is one budget per node however many processes take mail.
"""

from __future__ import annotations

import time
from typing import Any

from relay.intake import IntakeError, IntakeFull
from relay.spool import Spool, SpoolFull, SpoolWriter
from relay.spool_envelope import envelope_doc
from relay.workers.channel import Channel
from storage.records import SubmissionRecord


class OwnerLink:
    """The worker's requests to its owner, and what the owner last told it."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.waiting: tuple[int, int] = (0, 0)  # the owner's (messages, recipients) queued: the disk reserve

    def waiting_now(self) -> tuple[int, int]:
        return self.waiting

    async def call(self, op: str, **args: Any) -> Any:
        return await self.channel.call(op, **args)


class RemoteIntake:
    """Stage the message (write + fsync in tmp/, linked into queue/), then the owner adopts it,
    records it and hands it to delivery; the 250 follows the owner's answer."""

    def __init__(self, spool: Spool, owner: OwnerLink) -> None:
        self.spool = spool
        self.owner = owner

    async def accept(self, writer: SpoolWriter, record: SubmissionRecord) -> None:
        try:
            tmp_name, content = await self.spool.stage(writer, record)
        except SpoolFull as e:
            raise IntakeFull(str(e)) from e
        except Exception as e:
            raise IntakeError(str(e)) from e
        try:
            answer = await self.owner.call("publish", blob=content or b"", tmp=tmp_name, env=envelope_doc(record),
                                           content=content is not None)
        except Exception as e:  # the owner is going away: no 250; the staged file is its to purge
            raise IntakeError(str(e)) from e
        waiting = answer.get("waiting")
        if isinstance(waiting, list) and len(waiting) == 2:
            self.owner.waiting = (int(waiting[0]), int(waiting[1]))
        result = answer.get("result")
        if result == "full":
            raise IntakeFull("no space left in the queue")
        if result != "ok":
            raise IntakeError(str(answer.get("error") or "the owner could not queue the message"))

    async def record_intercepted(self, record: SubmissionRecord) -> None:
        await self.owner.call("intercepted", env=envelope_doc(record))


class RemoteRateBudget:
    def __init__(self, owner: OwnerLink) -> None:
        self.owner = owner

    async def acquire(self, api_user: str, messages: int = 1) -> bool:
        return bool(await self.owner.call("rate", u=api_user, n=messages))

    def refund(self, api_user: str, messages: int = 1) -> None:
        self.owner.channel.send("rate_refund", u=api_user, n=messages)


class RemoteThrottle:
    """The owner counts failed AUTHs; it tells every worker what becomes blocked and for how long,
    so a worker checks its copy (no request per AUTH). A failure is reported and acknowledged
    before the client hears 535: by then the owner has sent any block it caused to every worker."""

    MAX_KEYS = 100_000

    def __init__(self, owner: OwnerLink) -> None:
        self.owner = owner
        self._until: dict[tuple[str, str], float] = {}  # (kind, key) -> monotonic time it ends

    def block(self, kind: str, key: str, seconds: float) -> None:
        if len(self._until) >= self.MAX_KEYS:
            now = time.monotonic()
            self._until = {k: t for k, t in self._until.items() if t > now}
            if len(self._until) >= self.MAX_KEYS:
                self._until.pop(next(iter(self._until)))
        self._until[(kind, key)] = time.monotonic() + seconds

    def _active(self, kind: str, key: str, now: float) -> bool:
        until = self._until.get((kind, key))
        if until is None:
            return False
        if until <= now:
            del self._until[(kind, key)]
            return False
        return True

    async def blocked(self, ip: str, api_user: str) -> bool:
        now = time.monotonic()
        return self._active("ip", ip, now) or self._active("user", api_user, now)

    async def failed(self, ip: str, api_user: str) -> None:
        await self.owner.call("auth_failed", ip=ip, u=api_user)


class RemoteConnections:
    """Connections per client IP counted by the owner across every worker (one listener's gate)."""

    def __init__(self, owner: OwnerLink) -> None:
        self.owner = owner

    async def acquire(self, listener: str, ip: str) -> bool:
        return bool(await self.owner.call("conn_open", l=listener, ip=ip))

    def release(self, listener: str, ip: str) -> None:
        self.owner.channel.send("conn_close", l=listener, ip=ip)
