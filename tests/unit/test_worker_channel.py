"""The owner ⇄ worker channel: requests and answers both ways, errors, a peer that goes away."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from relay.workers.channel import Channel, ChannelClosed, RemoteError, open_channel


async def _pair() -> tuple[Channel, Channel, list[asyncio.Task[None]]]:
    a_sock, b_sock = socket.socketpair()

    async def owner(op: str, doc: dict[str, Any]) -> Any:
        if op == "add":
            return doc["x"] + doc["y"]
        if op == "size":
            return len(doc["blob"])
        if op == "note":
            notes.append(doc["text"])
            return None
        raise ValueError(f"unknown request {op!r}")

    async def worker(op: str, doc: dict[str, Any]) -> Any:
        return "pong"

    notes.clear()
    a = await open_channel(a_sock, owner)
    b = await open_channel(b_sock, worker)
    return a, b, [asyncio.create_task(a.serve()), asyncio.create_task(b.serve())]


notes: list[str] = []


async def test_requests_both_ways_and_notes() -> None:
    owner, worker, tasks = await _pair()
    results = await asyncio.gather(*(worker.call("add", x=i, y=1) for i in range(50)))
    assert results == list(range(1, 51))  # every answer finds its caller
    assert await owner.call("ping") == "pong"
    assert await worker.call("size", blob=bytes(range(256)) * 1000) == 256_000  # raw bytes, not JSON
    worker.send("note", text="ünïcode")
    await asyncio.sleep(0.05)
    assert notes == ["ünïcode"]
    with pytest.raises(RemoteError, match="unknown request 'nope'"):
        await worker.call("nope")
    await owner.close()
    await worker.closed.wait()
    with pytest.raises(ChannelClosed):
        await worker.call("add", x=1, y=2)
    worker.send("note", text="lost")  # a note to a closed channel is dropped, not raised
    await asyncio.gather(*tasks)


async def test_a_malformed_or_oversized_frame_closes_the_channel() -> None:
    for bad in (struct.pack("!II", 3, 0) + b"{x}", struct.pack("!II", 2**31, 0), struct.pack("!II", 2, 2**30)):
        a_sock, b_sock = socket.socketpair()

        async def handler(op: str, doc: dict[str, Any]) -> Any:
            return None

        ch = await open_channel(a_sock, handler)
        serving = asyncio.create_task(ch.serve())
        b_sock.sendall(bad)
        await asyncio.wait_for(serving, 5)
        assert ch.closed.is_set()
        b_sock.close()


async def test_a_call_pending_when_the_peer_dies_fails() -> None:
    a_sock, b_sock = socket.socketpair()

    async def handler(op: str, doc: dict[str, Any]) -> Any:
        return None

    ch = await open_channel(a_sock, handler)
    serving = asyncio.create_task(ch.serve())
    pending = asyncio.create_task(ch.call("publish"))
    await asyncio.sleep(0.05)
    b_sock.close()  # the other process was killed before answering
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(pending, 5)
    await serving
