"""The token bucket of the send API's quotas and the senders' provider rates."""

from __future__ import annotations

import math

import pytest

from infra.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, capacity=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == pytest.approx(0.1)
    clock.t = 0.1
    assert bucket.take() == 0
    assert bucket.take() == pytest.approx(0.1)


def test_never_saves_more_than_capacity() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=100, capacity=2, clock=clock)
    clock.t = 60
    assert [bucket.take() for _ in range(2)] == [0, 0]
    assert bucket.take() > 0


async def test_acquire_paces_callers() -> None:
    import time

    bucket = TokenBucket(rate=50, capacity=1)
    start = time.monotonic()
    for _ in range(6):
        await bucket.acquire()
    # 1 token up front, then 5 more at 50/s: at least ~0.1 s.
    assert time.monotonic() - start >= 0.09


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=-1, capacity=1)


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=5, clock=lambda: 0.0)
    assert [bucket.take(now=0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(now=0.0) == 0.1
    assert bucket.take(now=0.1) == 0.0  # one token back after 100 ms
    assert bucket.take(3, now=0.2) == 0.2  # one token there, two more needed
    assert bucket.take(6, now=5.0) == math.inf  # more than the burst: never
