"""Offsets lookups that survive a topic's first seconds (leaders not elected yet)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition


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
