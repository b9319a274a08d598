"""processors/eager.py: Faust's fetch loop runs the conductor's call inline when it can."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mode import Service

from processors import eager


class _Consumer(Service):
    """What `eager.install` touches of a Faust consumer: mode's `wait_first` and events."""

    def __post_init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self.originals = 0
        mode_wait_first = self.wait_first

        async def counted(*coros: Any, timeout: float | None = None) -> Any:  # noqa: ASYNC109
            self.originals += 1
            return await mode_wait_first(*coros, timeout=timeout)

        self.wait_first = counted  # type: ignore[method-assign]
        eager.install(self)


async def _consumer() -> _Consumer:
    return _Consumer()


def test_a_call_that_never_waits_runs_inline_without_a_task() -> None:
    async def main() -> None:
        consumer = await _consumer()
        ran: list[int] = []

        async def on_message(n: int) -> int:
            ran.append(n)
            return n * 2

        other = consumer.suspend_flow.wait()
        before = len(asyncio.all_tasks())
        result = await consumer.wait_first(on_message(21), other)
        assert ran == [21]
        assert result.results == [42] and not result.stopped
        assert consumer.originals == 0  # mode's four tasks never made
        assert len(asyncio.all_tasks()) == before
        assert other.cr_frame is None  # the unused waiter is closed, not left pending

    asyncio.run(main())


def test_a_call_that_waits_finishes_as_a_task() -> None:
    async def main() -> None:
        consumer = await _consumer()
        room = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def on_message() -> str:
            steps.append("start")
            await asyncio.sleep(0)  # a bare yield
            got = await room
            steps.append(got)
            return got

        async def free() -> None:
            await asyncio.sleep(0.01)
            room.set_result("room")

        freeing = asyncio.ensure_future(free())
        result = await consumer.wait_first(on_message(), consumer.suspend_flow.wait())
        await freeing
        assert steps == ["start", "room"]
        assert result.results == ["room"]
        assert consumer.originals == 1

    asyncio.run(main())


def test_a_waiting_call_is_cancelled_when_flow_is_suspended() -> None:
    async def main() -> None:
        consumer = await _consumer()
        never = asyncio.get_running_loop().create_future()
        cleaned: list[str] = []

        async def on_message() -> None:
            try:
                await never
            except asyncio.CancelledError:
                cleaned.append("cancelled")
                raise

        async def suspend() -> None:
            await asyncio.sleep(0.01)
            consumer.suspend_flow.set()

        suspending = asyncio.ensure_future(suspend())
        await consumer.wait_first(on_message(), consumer.suspend_flow.wait())
        await suspending
        await asyncio.sleep(0)
        assert cleaned == ["cancelled"]
        assert never.cancelled()  # as a task's cancellation would leave it

    asyncio.run(main())


def test_suspended_flow_goes_through_mode_as_before() -> None:
    async def main() -> None:
        consumer = await _consumer()
        consumer.suspend_flow.set()

        async def on_message() -> int:
            return 1

        await consumer.wait_first(on_message(), consumer.suspend_flow.wait())
        assert consumer.originals == 1

    asyncio.run(main())


def test_an_error_in_the_inline_call_is_raised_and_the_waiter_closed() -> None:
    async def main() -> None:
        consumer = await _consumer()

        async def on_message() -> None:
            raise ValueError("poison")

        other = consumer.suspend_flow.wait()
        with pytest.raises(ValueError, match="poison"):
            await consumer.wait_first(on_message(), other)
        assert other.cr_frame is None

    asyncio.run(main())


def test_resume_raises_what_the_coroutine_raises_after_waiting() -> None:
    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()

        async def body() -> None:
            await fut
            raise KeyError("after")

        coro = body()
        waiting_on = coro.send(None)
        assert waiting_on is fut
        asyncio.get_running_loop().call_later(0.01, fut.set_result, None)
        with pytest.raises(KeyError, match="after"):
            await eager.resume(coro, waiting_on)

    asyncio.run(main())


def test_other_uses_of_wait_first_are_modes_own() -> None:
    async def main() -> None:
        consumer = await _consumer()
        ev = asyncio.Event()
        ev.set()
        await consumer.wait_first(ev.wait())  # one awaitable, as `Service.wait` does
        assert consumer.originals == 1

    asyncio.run(main())
