"""A stuck coroutine is named by its await chain, and a stall is logged with it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from infra.diagnostics import StallWatch, await_chain


async def inner(never: asyncio.Future[None]) -> None:
    await never


async def outer(never: asyncio.Future[None]) -> None:
    await inner(never)


async def test_the_chain_goes_down_to_the_future_nobody_resolves() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(outer(never))
    await asyncio.sleep(0)
    chain = await_chain(task)
    assert [line.rsplit(" in ", 1)[-1] for line in chain[:2]] == ["outer", "inner"]
    assert chain[-1].startswith("awaiting <Future pending")
    task.cancel()


async def test_a_stall_is_logged_with_where_the_worker_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.stall")
    watch = StallWatch(log, after_s=0.2)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        with watch.busy("deciding a batch of 3 requests"):
            await outer(never)

    worker = asyncio.create_task(work())
    watcher = asyncio.create_task(watch.run(worker))
    with caplog.at_level(logging.WARNING, logger="test.stall"):
        await asyncio.sleep(0.5)
    worker.cancel()
    await asyncio.gather(worker, watcher, return_exceptions=True)
    # Logged once it took 0.2 s, and again every 0.2 s while it lasts.
    record, *again = [r for r in caplog.records if r.name == "test.stall"]
    assert again
    assert record.doing == "deciding a batch of 3 requests"  # type: ignore[attr-defined]
    assert record.for_s >= 0.2  # type: ignore[attr-defined]
    assert any(line.endswith(" in inner") for line in record.awaiting)  # type: ignore[attr-defined]


async def test_work_that_finishes_in_time_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.quick")
    watch = StallWatch(log, after_s=0.2)

    async def work() -> None:
        for _ in range(6):
            with watch.busy("deciding"):
                await asyncio.sleep(0.05)

    worker = asyncio.create_task(work())
    with caplog.at_level(logging.WARNING, logger="test.quick"):
        await asyncio.gather(worker, watch.run(worker))
    assert not [r for r in caplog.records if r.name == "test.quick"]


async def test_each_slow_piece_is_reported_on_its_own_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.pieces")
    watch = StallWatch(log, after_s=0.2)

    async def work() -> None:
        for name in ("first", "second"):  # back to back: no idle moment between them
            with watch.busy(name):
                await asyncio.sleep(0.3)

    worker = asyncio.create_task(work())
    with caplog.at_level(logging.WARNING, logger="test.pieces"):
        await asyncio.gather(worker, watch.run(worker))
    assert [r.doing for r in caplog.records if r.name == "test.pieces"] == ["first", "second"]  # type: ignore[attr-defined]
