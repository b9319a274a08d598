"""The bench's load producer is ready before a phase's clock starts."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from herald.bench.kafkautil import WARMUP_TOPIC, ready_producer
from tests.conftest import KAFKA_SETTINGS

pytestmark = pytest.mark.integration


def _end() -> int:
    consumer = Consumer({**KAFKA_SETTINGS.base_config("warmup-test"), "group.id": "warmup-test"})
    try:
        if WARMUP_TOPIC not in consumer.list_topics(timeout=10).topics:
            return 0
        return consumer.get_watermark_offsets(TopicPartition(WARMUP_TOPIC, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_ready_producer_returns_once_a_record_is_acknowledged() -> None:
    # A new idempotent producer holds its first records ~500 ms: returned before its
    # warm-up record is in the log, it would hold the phase's first requests instead.
    before = _end()
    producer = ready_producer(KAFKA_SETTINGS, "warmup-test")
    assert _end() == before + 1
    assert len(producer) == 0  # nothing left queued
