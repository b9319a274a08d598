"""The suite's bounded loop close (tests/conftest.py): a task that ignores its
cancellation fails the teardown by name instead of hanging the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from tests import conftest


async def ignore_cancellation() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


def test_a_task_that_ignores_cancellation_is_named_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "CANCEL_GRACE_S", 0.2)

    runner = asyncio.Runner()
    loop = runner.get_loop()
    loop.create_task(ignore_cancellation(), name="stubborn-task")
    loop.run_until_complete(asyncio.sleep(0))  # the task is inside its try
    with pytest.raises(conftest.TaskIgnoredCancellation, match="stubborn-task"):
        runner.close()
    assert loop.is_closed()


def test_tasks_that_obey_are_cancelled_as_before() -> None:
    runner = asyncio.Runner()
    loop = runner.get_loop()
    task = loop.create_task(asyncio.sleep(3600))
    runner.close()
    assert task.cancelled()


def test_a_stuck_async_generator_close_names_the_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "CANCEL_GRACE_S", 0.2)

    async def stream() -> AsyncGenerator[int, None]:
        try:
            yield 1
        finally:
            await ignore_cancellation()  # a cleanup that swallows its cancellation

    runner = asyncio.Runner()
    loop = runner.get_loop()

    async def start() -> AsyncGenerator[int, None]:
        gen = stream()
        await gen.__anext__()
        return gen

    gen = loop.run_until_complete(start())
    closing = loop.create_task(gen.aclose())  # what the loop does for a dropped generator
    loop.run_until_complete(asyncio.sleep(0))
    with pytest.raises(conftest.TaskIgnoredCancellation, match=r"closing async generator .*stream"):
        runner.close()
    assert closing.done() is False
