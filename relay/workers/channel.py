"""The owner ⇄ intake worker channel: framed JSON over a Unix socketpair.

A frame is two 4-byte big-endian lengths, a JSON object and that many raw bytes (a message's
content travels as bytes, not escaped in JSON; it arrives as ``doc["blob"]``). A request carries
``op`` and, when it wants an answer, an id ``i``; the answer is ``{"i": id, "r": result}`` or
``{"i": id, "e": text}``. Either side may ask (the owner pings workers; workers ask for budgets
and hand over messages).

It is on every message's path, so it is cheap: frames are cut out of the receive buffer in the
protocol callback (no stream reader per frame), a handler that answers at once (a budget) is
answered in the same callback and only one that waits (a hand-off) gets a task, and frames queued
in one turn of the event loop leave in one write.

The channel is a private socketpair between a process and its own child: nothing else can
connect to it. Frames are still bounded (``MAX_FRAME``) and a malformed one closes the channel.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, cast

log = logging.getLogger("mailrelay.workers")

_LEN = struct.Struct("!II")
MAX_FRAME = 64 * 1024 * 1024  # an envelope of 100 000 recipients fits; more is a bug
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_DECODE = json.JSONDecoder().decode

#: Answers a request: a value at once, or an awaitable of it.
Handler = Callable[[str, dict[str, Any]], Any]


class ChannelClosed(ConnectionError):
    """The other side went away (it exited, or was killed)."""


class RemoteError(Exception):
    """The other side answered a request with an error."""


class Channel(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    # region protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        start = 0
        try:
            while len(buf) - start >= _LEN.size:
                n, blob_len = _LEN.unpack_from(buf, start)
                if n + blob_len > MAX_FRAME:
                    raise ValueError(f"frame of {n + blob_len} bytes")
                end = start + _LEN.size + n + blob_len
                if len(buf) < end:
                    break
                body = start + _LEN.size
                doc = _DECODE(buf[body : body + n].decode("utf-8"))
                if not isinstance(doc, dict):
                    raise ValueError("a frame is not a JSON object")
                if blob_len:
                    doc["blob"] = bytes(buf[body + n : end])
                start = end
                self._dispatch(doc)
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            log.error("malformed frame on the worker channel; closing it", extra={
                "event": "worker_channel_error", "error": str(e)[:200]})
            self._close()
            return
        del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    # endregion

    def _dispatch(self, doc: dict[str, Any]) -> None:
        i = doc.get("i")
        op = doc.get("op")
        if op is None:  # an answer
            fut = self._waiting.get(i) if isinstance(i, int) else None
            if fut is not None and not fut.done():
                if "e" in doc:
                    fut.set_exception(RemoteError(str(doc["e"])))
                else:
                    fut.set_result(doc.get("r"))
            return
        op = str(op)
        try:
            result = self._handler(op, doc)
        except Exception as e:
            self._failed(op, i, e)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._answer_later(op, i, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif i is not None:
            self._queue({"i": i, "r": result})

    async def _answer_later(self, op: str, i: Any, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception as e:
            self._failed(op, i, e)
            return
        if i is not None and not self.closed.is_set():
            self._queue({"i": i, "r": result})

    def _failed(self, op: str, i: Any, e: Exception) -> None:
        if op != "ping":
            log.error("worker request failed", exc_info=e, extra={"event": "worker_request_failed", "op": op})
        if i is not None and not self.closed.is_set():
            self._queue({"i": i, "e": f"{e.__class__.__name__}: {e}"[:500]})

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
        if self._out and not self.closed.is_set() and self._transport is not None:
            out, self._out = self._out, []
            self._transport.write(b"".join(out))

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
        """Until the other side closes (or the channel is closed here)."""
        await self.closed.wait()

    def _close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ChannelClosed("channel closed"))
        if self._transport is not None:
            self._transport.close()

    async def close(self) -> None:
        self._flush()
        self._close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)


async def open_channel(sock: socket.socket, handler: Handler) -> Channel:
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_unix_connection(lambda: Channel(handler), sock=sock)
    return channel
