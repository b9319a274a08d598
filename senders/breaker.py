"""A circuit breaker per provider: stop calling a provider that keeps failing.

closed → (failure_threshold consecutive failures) → open → (open_for_s) → half-open:
up to `half_open_probes` sends go through; a success closes the circuit, a failure
opens it again. Only failures that say something about the provider's health count
(throttling, 5xx, timeouts, connection errors); a rejected address does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        open_for_s: float = 30.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.open_for_s = open_for_s
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.open_for_s:
            self._set(State.HALF_OPEN)
            self._probes = 0
        return self._state

    def allow(self) -> bool:
        """May a send go to this provider now? A True must be followed by exactly one
        `record_success()` or `record_failure()` (or `release()` if nothing was sent)."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and self._probes < self.half_open_probes:
            self._probes += 1
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        if self._state is not State.CLOSED:
            self._set(State.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is State.HALF_OPEN or (
            self._state is State.CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._set(State.OPEN)
        elif self._state is State.OPEN:
            self._opened_at = self._clock()

    def release(self) -> None:
        """A permitted probe that was not sent after all."""
        if self._state is State.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def _set(self, state: State) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(self.name, state)
