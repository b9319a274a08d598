"""The process-wide bound on deliveries in flight, shared by every lane of a sender.

A record holds a *sending* slot from the moment it is fetched until its claim is over:
its outcome is in the ledger (`settle`), or it finished some other way. What is left
then (producing the outcome's records, awaiting their acks, marking the row published)
holds a *publishing* slot from a pool of the same size instead, so a new record can be
fetched and claimed meanwhile. The sending slots bound the claims a crash can leave
uncertain; the two pools together bound the records in memory (twice the limit).
"""

from __future__ import annotations

import asyncio
import contextlib
from contextvars import ContextVar

from senders import metrics


class Slots:
    """Process-wide bound on deliveries in flight, shared by every lane."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # records taken from Kafka whose claim is not over yet
        # Held by a record from its turn until its claim is over / while it publishes.
        self.sending = asyncio.Semaphore(limit)
        self.publishing = asyncio.Semaphore(limit)
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

    def lease(self) -> Lease:
        """The slots of one record taken with `take()`; `end()` gives back what it holds."""
        return Lease(self)


class Lease:
    """One record's hold on the slots: `taken` (counted in `used`, waiting for its turn),
    `sending` (holds a sending slot), `publishing` (holds a publishing slot), `ended`."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.state = "taken"

    async def send(self) -> None:
        await self._slots.sending.acquire()
        self.state = "sending"

    async def settle(self) -> None:
        """The record's claim is over: trade its sending slot for a publishing one."""
        if self.state != "sending":
            return
        await self._slots.publishing.acquire()
        self._slots.sending.release()
        self._slots.give()
        self.state = "publishing"

    def end(self) -> None:
        if self.state == "sending":
            self._slots.sending.release()
        elif self.state == "publishing":
            self._slots.publishing.release()
        if self.state in ("taken", "sending"):
            self._slots.give()
        self.state = "ended"


# The lease of the record the current task is processing (set by the lane's dispatch).
CURRENT: ContextVar[Lease | None] = ContextVar("herald_sender_lease", default=None)


async def settle() -> None:
    """Called once a delivery's outcome is in the ledger: its claim is over."""
    lease = CURRENT.get()
    if lease is not None:
        await lease.settle()
