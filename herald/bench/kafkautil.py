"""Kafka helpers of the benchmarks: a broker check that says what to do, a producer ready
before the clock starts, offset lookups that survive a topic's first seconds (leaders not
elected yet), and clean-up."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.settings import KafkaSettings

# librdkafka's own "connect failed" lines while probing: the probe says it in one sentence.
_QUIET = logging.getLogger("herald.bench.kafka-probe")
_QUIET.setLevel(logging.CRITICAL)


def require_broker(kafka: KafkaSettings, timeout_s: float = 5.0) -> AdminClient:
    """An admin client of a broker that answers; exits with what to do when none does."""
    config: dict[str, Any] = {**kafka.base_config("bench-admin"), "logger": _QUIET}
    probe = AdminClient(config)
    try:
        probe.list_topics(timeout=timeout_s)
    except KafkaException:
        raise SystemExit(
            f"Kafka does not answer on {kafka.bootstrap_servers}: start the stack with"
            " `make stack-up` (the `make bench*` targets do it first)"
        ) from None
    return AdminClient(dict(kafka.base_config("bench-admin")))


def delete_topics(admin: AdminClient, prefixes: tuple[str, ...]) -> None:
    """Delete every topic whose name starts with one of `prefixes` (a run's own topics)."""
    mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
    if not mine:
        return
    for fut in admin.delete_topics(mine, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            fut.result()


def end_offsets(consumer: Consumer, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
    """Every partition of `topic` at its current end offset."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None or not meta.partitions:
                raise KafkaException(meta.error)
            out = []
            for p in sorted(meta.partitions):
                _lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                out.append(TopicPartition(topic, p, hi))
            return out
        except KafkaException:
            # A topic created a moment ago answers NOT_LEADER / UNKNOWN_TOPIC for a while.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# Bench data is worthless after the run.
BENCH_RETENTION_MS = 3_600_000


def create_topics(kafka: KafkaSettings, topics: Sequence[NewTopic]) -> None:
    """Create those of `topics` that do not exist yet (another client may race us)."""
    admin = AdminClient(dict(kafka.base_config("bench-admin")))
    existing = set(admin.list_topics(timeout=15).topics)
    new = [t for t in topics if t.topic not in existing]
    if not new:
        return
    for fut in admin.create_topics(new, operation_timeout=30).values():
        try:
            fut.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def ensure_topics(kafka: KafkaSettings, topics: Sequence[str], partitions: int) -> None:
    """Create the bench's own `topics` that do not exist yet (short retention)."""
    config = {"retention.ms": str(BENCH_RETENTION_MS)}
    create_topics(kafka, [NewTopic(t, partitions, 1, config=config) for t in topics])


# Where `ready_producer` sends its one record: a topic of the bench's own, nobody reads it.
WARMUP_TOPIC = "bench.warmup"


def ready_producer(kafka: KafkaSettings, client: str, timeout_s: float = 30.0) -> Producer:
    """A producer that has had a record acknowledged, so the next ones leave at once.

    A new idempotent librdkafka producer holds its first records ~500 ms (its producer id,
    then its connections): measured from their publish, a phase's first second of requests
    looked half a second slower than the rest, which was a fifth of a paced phase's p99."""
    ensure_topics(kafka, [WARMUP_TOPIC], partitions=1)
    producer = Producer(kafka.producer_config(client))
    acked: list[KafkaException | None] = []
    deadline = time.monotonic() + timeout_s
    while True:  # a topic created a moment ago may refuse its first record
        producer.produce(
            WARMUP_TOPIC,
            b"warm-up",
            on_delivery=lambda err, _msg: acked.append(KafkaException(err) if err else None),
        )
        producer.flush(max(0.0, deadline - time.monotonic()))
        if acked and acked[-1] is None:
            return producer
        if time.monotonic() > deadline:
            raise SystemExit(f"Kafka did not acknowledge a record in {timeout_s:.0f} s")
        time.sleep(0.2)
