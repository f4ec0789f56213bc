"""A webhook endpoint on loopback for tests and the benchmark: verifies every POST's signature,
records the events in arrival order, and can fail (HTTP status), hang or answer slowly on demand.

``mode`` is read per request, so a test changes the endpoint's behaviour while the sender runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Receiver:
    secrets: dict[int, str] = field(default_factory=dict)  # webhook id -> secret (to verify)
    timestamp_only: set[int] = field(default_factory=set)  # webhooks signed EngageLab's way (signature engagelab)
    status: int = 200  # the answer while not hanging
    delay: float = 0.0  # seconds before answering (a hang: longer than the sender's timeout)
    events: list[dict[str, Any]] = field(default_factory=list)  # accepted (2xx) events, in order
    posts: int = 0
    bad_signatures: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    runner: web.AppRunner | None = None
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.posts += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            hook_id = int(request.headers["X-WebHook-Id"])
            ts = request.headers["X-WebHook-Timestamp"]
            signed = ts.encode() + (b"" if hook_id in self.timestamp_only else raw)
            expected = hmac.new(self.secrets.get(hook_id, "").encode(), signed, hashlib.sha256).hexdigest()
            if (not hmac.compare_digest(expected, request.headers["X-WebHook-Signature"])
                    or request.headers["X-WebHook-AppKey"] != "email" or abs(time.time() - int(ts)) > 300):
                self.bad_signatures += 1
                return web.Response(status=401)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status >= 300:
                return web.Response(status=self.status)
            doc = json.loads(raw)
            self.events.extend(doc if isinstance(doc, list) else [doc])
            self.arrived.set()
            return web.Response(status=self.status)
        finally:
            self.in_flight -= 1

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def ids(self) -> list[int]:
        return [int(e["event_id"]) for e in self.events]

    async def wait_for(self, n: int, timeout: float) -> None:
        """Until ``n`` distinct events were accepted (raises TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while len(set(self.ids())) < n:
                self.arrived.clear()
                await self.arrived.wait()
