"""The physical baseline: a bare confluent-kafka consume → produce loop on the same broker.

It moves the same encoded request records from one bench topic to another with the same
producer and consumer settings as herald (idempotent, acks=all, read_committed, offsets
stored by hand), so the ratio pipeline / passthrough isolates what herald's own work costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer

from herald.bench.kafkautil import end_offsets, ensure_topics
from infra.settings import KafkaSettings

IN_TOPIC = "bench.passthrough.in"
OUT_TOPIC = "bench.passthrough.out"
PARTITIONS = 6  # as notifications.requested


@dataclass
class PassthroughResult:
    records: int
    seconds: float
    produce_seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def produce_per_s(self) -> float:
        return self.records / self.produce_seconds if self.produce_seconds else 0.0


def run(
    kafka: KafkaSettings,
    payloads: Sequence[tuple[bytes, bytes]],
    *,
    progress: Callable[[int], None] = lambda _n: None,
) -> PassthroughResult:
    """Load `payloads` (key, value) into the input topic, then time the consume → produce copy.

    The topics are reused across runs: the consumer starts at the input's end offsets taken
    before loading, so only this run's records are copied.
    """
    ensure_topics(kafka, [IN_TOPIC, OUT_TOPIC], PARTITIONS)
    group = f"herald-bench-passthrough-{time.time_ns()}"
    consumer = Consumer(kafka.consumer_config("bench-passthrough", group))
    start_at = end_offsets(consumer, IN_TOPIC)

    loader = Producer(kafka.producer_config("bench-passthrough-load"))
    t0 = time.perf_counter()
    for key, value in payloads:
        while True:
            try:
                loader.produce(IN_TOPIC, value=value, key=key)
                break
            except BufferError:
                loader.poll(0.05)
        loader.poll(0)
    loader.flush(60)
    produce_seconds = time.perf_counter() - t0

    producer = Producer(kafka.producer_config("bench-passthrough"))
    consumer.assign(start_at)
    total = len(payloads)
    copied = 0
    started: float | None = None
    try:
        while copied < total:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            for msg in batch:
                if msg.error():
                    raise KafkaException(msg.error())
                while True:
                    try:
                        producer.produce(OUT_TOPIC, value=msg.value(), key=msg.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                consumer.store_offsets(msg)
            producer.poll(0)
            copied += len(batch)
            progress(len(batch))
        # Records are only moved once the output broker has acknowledged them.
        producer.flush(60)
        seconds = time.perf_counter() - (started or time.perf_counter())
    finally:
        consumer.close()
    return PassthroughResult(records=copied, seconds=seconds, produce_seconds=produce_seconds)
