"""relay/batched_calls.py: calls that share thread trips; ``post`` asks without waiting."""

from __future__ import annotations

import asyncio
import threading

from relay.batched_calls import BatchedCalls


async def test_posted_calls_run_in_shared_trips_and_report_success_only() -> None:
    ran: list[str] = []
    threads: set[int] = set()

    def call(item: str) -> None:
        threads.add(threading.get_ident())
        if item == "bad":
            raise OSError("refused")
        ran.append(item)

    calls = BatchedCalls[str](call)
    succeeded: list[str] = []
    for item in ("a", "bad", "b", "c"):
        calls.post(item, succeeded.append)
    await calls.drain(5.0)
    await asyncio.sleep(0)  # done callbacks run on the loop's next turn
    assert ran == ["a", "b", "c"]
    assert succeeded == ["a", "b", "c"]  # not "bad": its call failed
    assert threading.get_ident() not in threads  # never on the event loop's thread


async def test_run_and_post_share_a_batch_and_run_waits_for_its_own_call() -> None:
    gate = threading.Event()
    order: list[str] = []

    def call(item: str) -> None:
        if item == "first":
            gate.wait(5)
        order.append(item)

    calls = BatchedCalls[str](call)
    first = asyncio.create_task(calls.run("first"))
    await asyncio.sleep(0.05)  # "first" is in its thread trip, held by the gate
    calls.post("posted")
    second = asyncio.create_task(calls.run("second"))
    await asyncio.sleep(0.05)
    assert not second.done()
    gate.set()
    await asyncio.gather(first, second)
    assert order == ["first", "posted", "second"]
