"""Helpers for the ops integration tests (imported by them; pytest fixtures live in conftest)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from cassandra.cluster import Session
from confluent_kafka import Producer

from herald.ops import kafkaio
from infra.settings import KafkaSettings
from schemas import codec, ids
from schemas.events import now_ms


def delivery(channel: str, category: str, **over: Any) -> dict[str, Any]:
    notification_id = ids.notification_id(str(uuid.uuid4()))
    record = {
        "delivery_id": ids.delivery_id(notification_id, channel, str(uuid.uuid4())),
        "notification_id": notification_id,
        "event_id": str(uuid.uuid4()),
        "user_id": f"u-{uuid.uuid4().hex[:8]}",
        "channel": channel,
        "category": category,
        "address": "https://push.example.test/endpoint/abc",
        "body": "hello",
        "requested_at": now_ms(),
        "created_at": now_ms(),
    }
    record.update(over)
    return record


def produce_records(
    producer: Producer,
    topic: str,
    records: list[dict[str, Any]],
    schema: str = codec.DELIVERY,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    for r in records:
        producer.produce(topic, codec.encode(schema, r), r["user_id"].encode(), headers=headers)
    assert producer.flush(15) == 0


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    c = kafkaio.ops_consumer(kafka, "ops-test")
    try:
        return {p: hi for p, (_lo, hi) in kafkaio.watermarks(c, topic).items()}
    finally:
        c.close()


def read_since(
    kafka: KafkaSettings, topic: str, since: dict[int, int], keep: Callable[[Any], bool]
) -> list[Any]:
    """Records produced to `topic` after the `since` offsets that `keep` accepts."""
    c = kafkaio.ops_consumer(kafka, "ops-test")
    try:
        ranges = [
            kafkaio.PartitionRange(p, since.get(p, 0), hi)
            for p, (_lo, hi) in kafkaio.watermarks(c, topic).items()
        ]
        return [m for batch in kafkaio.read_ranges(c, topic, ranges) for m in batch if keep(m)]
    finally:
        c.close()


def set_ledger(session: Session, delivery_id: str, state: str) -> None:
    session.execute(
        "INSERT INTO deliveries (delivery_id, notification_id, state, attempt, updated_at) "
        "VALUES (%s, %s, %s, 1, toTimestamp(now()))",
        (delivery_id, "n", state),
    )


def wait_for(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
