"""Helpers for intake integration tests: unique ids, reading records back from Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from schemas import codec
from tests.conftest import KAFKA_SETTINGS

KAFKA = KAFKA_SETTINGS


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def read_at(topic: str, partition: int, offset: int, timeout: float = 15.0) -> Any:
    """The record at one offset, read with a fresh consumer assigned straight to it."""
    consumer = Consumer(KAFKA.consumer_config("test-intake", f"test-intake-{uuid.uuid4()}"))
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                return msg
        raise AssertionError(f"nothing at {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


def records_for(
    topic: str,
    key: str,
    *,
    since_ms: int,
    count: int,
    expect: str | None = None,
    timeout: float = 20.0,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Decoded records of one key produced to `topic` since a timestamp: `count` of them,
    or up to and including the first for which `until` is true."""
    consumer = Consumer(KAFKA.consumer_config("test-intake", f"test-intake-{uuid.uuid4()}"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        # High watermarks first: a partition with nothing since `since_ms` yet starts there,
        # and whatever lands after this call is at or past it.
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in meta.partitions], timeout=10
        )
        consumer.assign(
            [
                TopicPartition(
                    topic, tp.partition, tp.offset if tp.offset >= 0 else ends[tp.partition]
                )
                for tp in found
            ]
        )
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(out) < count:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            if msg.key() == key.encode():
                out.append(codec.decode(msg.value(), expect=expect))
                if until is not None and until(out[-1]):
                    break
        return out
    finally:
        consumer.close()


def changes_for(
    user_id: str, *, since_ms: int, count: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    return records_for(
        "users.changes",
        user_id,
        since_ms=since_ms,
        count=count,
        expect=codec.USER_CHANGE,
        timeout=timeout,
    )
