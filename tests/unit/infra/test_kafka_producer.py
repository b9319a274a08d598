"""The producer batch: one wake-up per batch, refusals reported with the caller's tag."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from infra.kafka_producer import Batch, is_permanent


class ThreadedProducer:
    """Reports deliveries from another thread, later, as librdkafka's poll thread does."""

    def __init__(self, refuse: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        self.reports: list[tuple[Any, bytes]] = []
        self.refuse = refuse

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        if value == b"huge":
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.reports.append((on_delivery, value))

    def deliver_later(self) -> None:
        def run() -> None:
            for report, value in self.reports:
                err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if value in self.refuse else None
                report(err, None)

        threading.Timer(0.05, run).start()


async def test_wait_returns_once_every_record_is_acked() -> None:
    producer = ThreadedProducer(refuse={b"b"})
    batch = Batch(producer, asyncio.get_running_loop())  # type: ignore[arg-type]
    for i, value in enumerate((b"a", b"b", b"c")):
        batch.send("t", value, key=None, tag=i)
    producer.deliver_later()
    await asyncio.wait_for(batch.wait(), 2)
    assert [(tag, is_permanent(err)) for tag, err in batch.failed] == [(1, True)]


async def test_an_empty_batch_does_not_wait() -> None:
    batch = Batch(ThreadedProducer(), asyncio.get_running_loop())  # type: ignore[arg-type]
    await asyncio.wait_for(batch.wait(), 0.1)


async def test_a_record_refused_at_once_raises_and_is_not_waited_for() -> None:
    batch = Batch(ThreadedProducer(), asyncio.get_running_loop())  # type: ignore[arg-type]
    with pytest.raises(KafkaException):
        batch.send("t", b"huge", key=None)
    await asyncio.wait_for(batch.wait(), 0.1)
