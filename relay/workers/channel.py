"""The owner ⇄ intake worker channel: length-prefixed JSON frames over a Unix socketpair.

A frame is two 4-byte big-endian lengths, a JSON object and that many raw bytes (a message's
content travels as bytes, not escaped in JSON; it arrives as ``doc["blob"]``). A request carries
``op`` and, when it wants an answer, an id ``i``; the answer is ``{"i": id, "r": result}`` or
``{"i": id, "e": text}``.
Either side may ask (the owner pings workers; workers ask for budgets and hand over messages).
Frames written in one turn of the event loop leave in one write.

The channel is a private socketpair between a process and its own child: nothing else can
connect to it. Frames are still bounded (``MAX_FRAME``) and a malformed one closes the channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("mailrelay.workers")

_LEN = struct.Struct("!II")
MAX_FRAME = 64 * 1024 * 1024  # an envelope of 100 000 recipients fits; more is a bug
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ChannelClosed(ConnectionError):
    """The other side went away (it exited, or was killed)."""


class RemoteError(Exception):
    """The other side answered a request with an error."""


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    # region sending
    def _queue(self, doc: dict[str, Any], blob: bytes = b"") -> None:
        if self.closed.is_set():
            raise ChannelClosed("channel closed")
        data = _ENCODE(doc).encode("utf-8")
        self._out.append(_LEN.pack(len(data), len(blob)))
        self._out.append(data)
        if blob:
            self._out.append(blob)
        if not self._flush_scheduled:  # everything queued in this turn of the loop leaves together
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed.is_set():
            out, self._out = self._out, []
            self._writer.write(b"".join(out))

    async def call(self, op: str, blob: bytes = b"", **args: Any) -> Any:
        """Ask the other side; raises :class:`ChannelClosed` when it goes away before answering."""
        self._next_id += 1
        i = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[i] = fut
        try:
            self._queue({"op": op, "i": i, **args}, blob)
            return await fut
        finally:
            self._waiting.pop(i, None)

    def send(self, op: str, **args: Any) -> None:
        """Tell the other side; no answer. Lost if the channel is closed."""
        if not self.closed.is_set():
            self._queue({"op": op, **args})

    # endregion

    async def serve(self) -> None:
        """Read frames until the other side closes; then every pending call fails."""
        try:
            while True:
                head = await self._reader.readexactly(_LEN.size)
                n, blob_len = _LEN.unpack(head)
                if n + blob_len > MAX_FRAME:
                    raise ValueError(f"frame of {n + blob_len} bytes")
                doc = json.loads(await self._reader.readexactly(n))
                if blob_len:
                    doc["blob"] = await self._reader.readexactly(blob_len)
                i = doc.get("i")
                op = doc.get("op")
                if op is None:  # an answer
                    fut = self._waiting.get(i) if isinstance(i, int) else None
                    if fut is not None and not fut.done():
                        if "e" in doc:
                            fut.set_exception(RemoteError(str(doc["e"])))
                        else:
                            fut.set_result(doc.get("r"))
                    continue
                task = asyncio.create_task(self._answer(str(op), i, doc))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except (ValueError, TypeError, AttributeError) as e:
            log.error("malformed frame on the worker channel; closing it", extra={
                "event": "worker_channel_error", "error": str(e)[:200]})
        finally:
            self._close()

    async def _answer(self, op: str, i: Any, doc: dict[str, Any]) -> None:
        try:
            result = await self._handler(op, doc)
        except Exception as e:
            if op != "ping":
                log.exception("worker request failed", extra={"event": "worker_request_failed", "op": op})
            if i is not None and not self.closed.is_set():
                self._queue({"i": i, "e": f"{e.__class__.__name__}: {e}"[:500]})
            return
        if i is not None and not self.closed.is_set():
            self._queue({"i": i, "r": result})

    def _close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ChannelClosed("channel closed"))
        self._writer.close()

    async def close(self) -> None:
        self._flush()
        self._close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)


async def open_channel(sock: Any, handler: Handler) -> Channel:
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_FRAME)
    return Channel(reader, writer, handler)
