"""Faust's fetch loop without four tasks per record.

The consumer's fetch loop hands every record to the conductor with
`await self.wait_first(callback(message), self.suspend_flow.wait())`, and mode's
`Service.wait_first` wraps that call, the suspend event and the service's stopped and
crashed events in four tasks, then cancels three: about 7% of the processor's CPU in a
py-spy profile of `make bench` (faust-streaming 0.15, mode 0.4). The call almost never
waits (its stream's queue has room, flow is not suspended), so `install` runs it inline
first; only a call that has to wait is carried on as a task and raced against the same
events, as before. Python 3.12's eager tasks do the same for every task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from mode.services import WaitResults


def _close(aw: Any) -> None:
    if asyncio.iscoroutine(aw):
        aw.close()  # never started: no "was never awaited" warning


async def resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Carry on `coro`, which a first `send(None)` left waiting on `waiting_on` (what it
    yielded), as its task would: wait for that future, then step it again. Cancelled
    meanwhile, the future is cancelled and the coroutine is told, as a task's would be."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)  # a bare yield: one turn of the loop
            elif not asyncio.isfuture(waiting_on):
                raise RuntimeError(f"coroutine yielded {waiting_on!r}, not a future")
            else:
                waiting_on._asyncio_future_blocking = False
                await asyncio.wait([waiting_on])
        except BaseException as exc:
            if asyncio.isfuture(waiting_on):
                waiting_on.cancel()
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration as stop:
            return stop.value


def install(consumer: Any) -> None:
    """Give `consumer` (a Faust consumer) a `wait_first` that runs the fetch loop's call
    inline whenever it finishes without waiting; every other use is mode's own."""
    original = consumer.wait_first

    async def wait_first(*coros: Any, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (mode's signature)
        if (
            len(coros) != 2
            or timeout is not None
            or not asyncio.iscoroutine(coros[0])
            or consumer.suspend_flow.is_set()
            or consumer._stopped.is_set()
            or consumer._crashed.is_set()
        ):
            return await original(*coros, timeout=timeout)
        call, other = coros
        try:
            waiting_on = call.send(None)
        except StopIteration as stop:
            _close(other)
            return WaitResults([call], [stop.value], False)
        except BaseException:
            _close(other)
            raise
        return await original(resume(call, waiting_on), other)

    consumer.wait_first = wait_first
