"""The process-wide bound on deliveries in flight, shared by every lane of a sender."""

from __future__ import annotations

import asyncio
import contextlib

from senders import metrics


class Slots:
    """Process-wide bound on deliveries in flight, shared by every lane."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # records taken from Kafka and not finished
        self._sem = asyncio.Semaphore(limit)
        self._freed = asyncio.Event()

    def free(self, reserve: int = 0) -> int:
        return max(0, self.limit - reserve - self.used)

    def take(self) -> None:
        self.used += 1
        metrics.IN_FLIGHT.set(self.used)

    def give(self) -> None:
        self.used -= 1
        metrics.IN_FLIGHT.set(self.used)
        self._freed.set()

    async def wait_free(self, reserve: int, within: float) -> bool:
        """True once a slot is free for a lane leaving `reserve`; False after `within` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.free(reserve) == 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), remaining)
        return True

    @property
    def sending(self) -> asyncio.Semaphore:
        """Held while a record is being processed: never more than `limit` at once."""
        return self._sem
