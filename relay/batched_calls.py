"""One thread trip for many small blocking calls: :class:`BatchedCalls`.

Used for the spool's removals of delivered messages and of adopted staged links: an unlink costs
less than the trip to a thread (``asyncio.to_thread``: an executor submit, a future, a wake-up),
so calls asked for while one trip runs go together in the next. Each caller still returns only
once its own call is done, with its own outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()


class BatchedCalls(Generic[T]):
    """``await calls.run(item)`` runs ``call(item)`` in a thread, batched with the items of other
    callers; an ``OSError`` fails only its own caller."""

    def __init__(self, call: Callable[[T], None]) -> None:
        self._call = call
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self, item: T) -> None:
        await asyncio.shield(self._enqueue(item))  # a cancelled caller must not cancel its neighbours' batch

    def post(self, item: T, on_done: Callable[[T], None] | None = None) -> None:
        """Ask for ``call(item)`` without waiting for it (batched like :meth:`run`); ``on_done(item)``
        runs on the loop once the call succeeded (after a failure it does not)."""
        done = self._enqueue(item)
        if on_done is not None:
            done.add_done_callback(lambda f: None if f.cancelled() or f.exception() else on_done(item))

    def _enqueue(self, item: T) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        done.add_done_callback(_retrieve)  # its caller may be gone (cancelled): no "never retrieved"
        self._pending.append((item, done))
        if self._task is None:
            self._task = loop.create_task(self._run_pending())
        return done

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for the calls already asked for, whatever their callers do."""
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def _run_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    errors = await asyncio.to_thread(self._run_batch, [item for item, _ in batch])
                except BaseException as e:  # no thread to run it (shutdown) or cancelled: nobody waits forever,
                    left, self._pending = batch + self._pending, []  # not even those asked meanwhile
                    for _, done in left:
                        if not done.done():
                            done.cancel() if isinstance(e, asyncio.CancelledError) else done.set_exception(e)
                    raise
                for i, (_, done) in enumerate(batch):
                    if not done.done():
                        error = errors.get(i)
                        done.set_exception(error) if error is not None else done.set_result(None)
        finally:
            self._task = None

    def _run_batch(self, items: list[T]) -> dict[int, OSError]:
        errors: dict[int, OSError] = {}
        for i, item in enumerate(items):
            try:
                self._call(item)
            except OSError as e:  # fails only its own caller
                errors[i] = e
        return errors
