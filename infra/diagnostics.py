"""Where a stuck coroutine waits: for the logs of a service that stopped making progress.

`Task.get_stack()` gives only a suspended task's outermost frame; the await chain below it
(which coroutine awaits which, down to the future nobody resolves) is what names a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterator
from typing import Any

MAX_DEPTH = 64


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Each coroutine the task is suspended in, outermost first, as `file:line in name`,
    then what the innermost one awaits (a future, a sleep, a lock's waiter)."""
    chain: list[str] = []
    obj: Any = task.get_coro()
    for _ in range(MAX_DEPTH):
        frame = next(
            (f for a in ("cr_frame", "gi_frame", "ag_frame") if (f := getattr(obj, a, None))),
            None,
        )
        if frame is None:
            # Awaiting a future directly leaves its C iterator here; the future is inside.
            awaited = next((r for r in gc.get_referents(obj) if asyncio.isfuture(r)), obj)
            chain.append(f"awaiting {awaited!r:.300}")
            break
        chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_qualname}")
        inner = next(
            (n for a in ("cr_await", "gi_yieldfrom", "ag_await") if (n := getattr(obj, a, None))),
            None,
        )
        if inner is None:
            break
        obj = inner
    return chain


class StallWatch:
    """Tracks one piece of work at a time (`with watch.busy("deciding 50 requests")`) and,
    while `run` watches, logs a warning with the worker's await chain whenever that piece
    has taken longer than `after_s` (again every `after_s` while it lasts)."""

    def __init__(self, log: logging.Logger, after_s: float) -> None:
        self._log = log
        self.after_s = after_s
        self._doing: str | None = None
        self._since = 0.0

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    @contextlib.contextmanager
    def busy(self, doing: str) -> Iterator[None]:
        self._doing, self._since = doing, self._now()
        try:
            yield
        finally:
            self._doing = None

    async def run(self, worker: asyncio.Task[Any]) -> None:
        piece, reported = -1.0, 0.0  # the piece last reported (by start time), and when
        while not worker.done():
            await asyncio.sleep(min(self.after_s / 4, 5.0))
            if self._doing is None:
                continue
            if self._since != piece:
                piece, reported = self._since, 0.0
            took = self._now() - self._since
            if took >= self.after_s and took - reported >= self.after_s:
                reported = took
                self._log.warning(
                    "no progress: one piece of work is taking long",
                    extra={
                        "doing": self._doing,
                        "for_s": round(took, 1),
                        "awaiting": await_chain(worker),
                    },
                )
