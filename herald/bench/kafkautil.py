"""Kafka helpers of the benchmarks: a broker check that says what to do, offset lookups
that survive a topic's first seconds (leaders not elected yet), and clean-up."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

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
