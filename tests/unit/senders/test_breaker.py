from __future__ import annotations

from senders.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(clock: Clock, **kw: int | float) -> CircuitBreaker:
    return CircuitBreaker("p", failure_threshold=3, open_for_s=10, clock=clock, **kw)  # type: ignore[arg-type]


def test_opens_after_consecutive_failures_only() -> None:
    b = make(Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state is State.CLOSED and b.allow()
    b.record_failure()
    assert b.state is State.OPEN
    assert not b.allow()


def test_half_open_after_cooldown_allows_one_probe_and_closes_on_success() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(3):
        b.record_failure()
    clock.t = 9.9
    assert not b.allow()
    clock.t = 10.0
    assert b.state is State.HALF_OPEN
    assert b.allow()
    assert not b.allow()  # one probe at a time
    b.record_success()
    assert b.state is State.CLOSED and b.allow()


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(3):
        b.record_failure()
    clock.t = 10
    assert b.allow()
    b.record_failure()
    assert b.state is State.OPEN
    clock.t = 19
    assert not b.allow()
    clock.t = 20
    assert b.allow()


def test_released_probe_can_be_taken_again() -> None:
    clock = Clock()
    b = make(clock)
    for _ in range(3):
        b.record_failure()
    clock.t = 10
    assert b.allow()
    b.release()
    assert b.allow()


def test_state_changes_are_reported() -> None:
    seen: list[State] = []
    clock = Clock()
    b = CircuitBreaker(
        "p", failure_threshold=1, open_for_s=1, clock=clock, on_change=lambda _n, s: seen.append(s)
    )
    b.record_failure()
    clock.t = 1
    b.allow()
    b.record_success()
    assert seen == [State.OPEN, State.HALF_OPEN, State.CLOSED]
