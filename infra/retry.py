"""One way to retry: what counts as an outage, and how long to wait between tries.

An outage — Kafka or Cassandra not answering — is waited out however long it lasts:
herald fails closed, it never skips a step it could not record. Anything else is
permanent (a bug, a poison value, a record Kafka refuses for good) and is raised, at once
or after the few tries a caller allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from cassandra import OperationTimedOut, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from confluent_kafka import KafkaException

from infra.kafka_producer import refusal

T = TypeVar("T")

# Kafka or Cassandra unavailable, overloaded or timing out.
SERVER_OUTAGES: tuple[type[Exception], ...] = (
    KafkaException,
    NoHostAvailable,
    OperationTimedOut,
    RequestExecutionException,
)


def is_outage(exc: BaseException) -> bool:
    """Kafka or Cassandra not answering (or the network under them): waited out however
    long it lasts. A record Kafka refuses is not an outage."""
    return isinstance(exc, (*SERVER_OUTAGES, OSError)) and refusal(exc) is None


@dataclass(frozen=True)
class Backoff:
    """Exponential: `first_s`, doubled after each failure, never more than `max_s`."""

    first_s: float
    max_s: float

    def delays(self) -> Iterator[float]:
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


OnRetry = Callable[[Exception, float], None]


async def retrying(
    op: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retriable: Callable[[Exception], bool] = is_outage,
    attempts: int = 1,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    stop_on: tuple[type[Exception], ...] = (),
) -> T:
    """`await op()` until it succeeds. A failure `retriable` accepts is retried for as long
    as it lasts; any other is raised once it has happened `attempts` times, and one of
    `stop_on` (a shutdown) at once. `on_retry(exc, delay)` runs inside the `except` (so
    `log.exception` shows the error) before each wait."""
    failures = 0
    delays: Iterator[float] | None = None  # set up at the first failure: most calls succeed
    while True:
        try:
            return await op()
        except stop_on:
            raise
        except Exception as exc:
            if not retriable(exc):
                failures += 1
                if failures >= attempts:
                    raise
            if delays is None:
                delays = backoff.delays()
            delay = next(delays)
            if on_retry is not None:
                on_retry(exc, delay)
        await (sleep or asyncio.sleep)(delay)


def retrying_blocking(
    op: Callable[[], T],
    backoff: Backoff,
    *,
    retriable: Callable[[Exception], bool] = is_outage,
    on_retry: OnRetry | None = None,
) -> T:
    """`retrying` for a blocking `op` (start-up, before any event loop): only a retriable
    failure is retried."""
    for delay in backoff.delays():
        try:
            return op()
        except Exception as exc:
            if not retriable(exc):
                raise
            if on_retry is not None:
                on_retry(exc, delay)
        time.sleep(delay)
    raise AssertionError("unreachable: the delays never end")
