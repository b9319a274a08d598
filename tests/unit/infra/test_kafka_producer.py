"""The producer: one wake-up per batch or group of records, refusals reported to their
callers (with the tag given, for a batch)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from infra.kafka_producer import AsyncProducer, Batch, is_permanent


class ThreadedProducer:
    """Reports deliveries from another thread, later, as librdkafka's poll thread does."""

    def __init__(self, refuse: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        self.reports: list[tuple[Any, bytes]] = []
        self.refuse = refuse

    def produce(
        self,
        topic: str,
        value: bytes,
        key: Any,
        partition: int = -1,
        *,
        headers: Any,
        on_delivery: Any,
    ) -> None:
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


class PolledProducer:
    """Answers records only when polled (as librdkafka does on `AsyncProducer`'s thread),
    and only once `release` is set, so a test controls when the acks come."""

    def __init__(self, refuse: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        self.refuse = refuse
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._reports: list[tuple[Any, bytes]] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: Any,
        partition: int = -1,
        *,
        headers: Any,
        on_delivery: Any,
    ) -> None:
        if value == b"huge":
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        with self._lock:
            self._reports.append((on_delivery, value))

    def poll(self, timeout: float) -> int:
        if not self.release.wait(timeout):
            return 0
        with self._lock:
            reports, self._reports = self._reports, []
        for report, value in reports:
            report(
                KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if value in self.refuse else None, None
            )
        return len(reports)

    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture
def polled() -> Any:
    producers: list[AsyncProducer] = []

    def make(refuse: set[bytes] = frozenset()) -> tuple[AsyncProducer, PolledProducer]:  # type: ignore[assignment]
        fake = PolledProducer(refuse)
        producers.append(AsyncProducer(producer=fake))  # type: ignore[arg-type]
        return producers[-1], fake

    yield make
    for p in producers:
        p.close()


async def test_records_produced_together_all_return_once_acked(polled: Any) -> None:
    producer, fake = polled()
    calls = [asyncio.create_task(producer.produce("t", b"v%d" % i)) for i in range(50)]
    await asyncio.sleep(0.05)
    assert not any(c.done() for c in calls)  # nothing returns before its ack
    fake.release.set()
    await asyncio.wait_for(asyncio.gather(*calls), 2)


async def test_a_refused_record_raises_for_its_caller_only(polled: Any) -> None:
    producer, fake = polled(refuse={b"bad"})
    calls = [asyncio.create_task(producer.produce("t", v)) for v in (b"a", b"bad", b"c")]
    await asyncio.sleep(0.01)
    fake.release.set()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], KafkaException) and is_permanent(results[1].args[0])


async def test_a_cancelled_caller_leaves_the_others_waiting_for_their_acks(polled: Any) -> None:
    producer, fake = polled()
    calls = [asyncio.create_task(producer.produce("t", b"v%d" % i)) for i in range(3)]
    await asyncio.sleep(0.01)
    calls[0].cancel()
    await asyncio.sleep(0.01)
    assert not calls[1].done() and not calls[2].done()
    fake.release.set()
    await asyncio.wait_for(asyncio.gather(calls[1], calls[2]), 2)
    assert calls[0].cancelled()


async def test_a_record_refused_outright_raises_at_once_and_the_group_still_completes(
    polled: Any,
) -> None:
    producer, fake = polled()
    first = asyncio.create_task(producer.produce("t", b"a"))
    await asyncio.sleep(0)
    with pytest.raises(KafkaException):
        await asyncio.wait_for(producer.produce("t", b"huge"), 1)
    fake.release.set()
    await asyncio.wait_for(first, 2)
