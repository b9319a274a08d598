"""The token bucket: the send API's per-client quotas and failed-login throttle, and the
senders' per-provider rate (kept under each provider's quota)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, at most `capacity` saved up (full at the start); a rate of
    0 grants the capacity once and nothing after. Waiters in `acquire` are served in order."""

    def __init__(
        self, rate: float, capacity: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0 or capacity < 0:
            raise ValueError("rate and capacity must be >= 0")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()
        self._lock = asyncio.Lock()

    def take(self, n: int = 1, now: float | None = None) -> float:
        """Take `n` tokens and return 0, or return the seconds until they would be there
        (infinite when they never will: more than the capacity, or no rate)."""
        now = self._clock() if now is None else now
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if n > self.capacity:
            return math.inf
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        return (n - self._tokens) / self.rate if self.rate > 0 else math.inf

    def refund(self, n: int = 1) -> None:
        """Give back tokens taken for something that did not happen."""
        self._tokens = min(self.capacity, self._tokens + n)

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        # The lock keeps waiters FIFO; holding it while sleeping is the point: the next
        # waiter cannot take a token before the current one.
        async with self._lock:
            while (wait := self.take()) > 0:  # noqa: ASYNC110 - waiting on a clock
                await asyncio.sleep(wait)
