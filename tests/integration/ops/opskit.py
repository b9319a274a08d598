"""Helpers for the ops integration tests (imported by them; pytest fixtures live in conftest)."""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from cassandra.cluster import Session
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from herald.ops import slices
from infra.settings import KafkaSettings
from schemas import codec, ids
from schemas.events import now_ms
from tests.conftest import KAFKA
from tests.support import wait_for

# The test session's own topic family (deleted at the end): no other run's sender reads it,
# so the ledger and the emulators see only what these tests do.
PREFIX = f"herald-ops-test.{uuid.uuid4().hex[:8]}."


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
    c = slices.ops_consumer(kafka, "ops-test")
    try:
        return {p: hi for p, (_lo, hi) in slices.watermarks(c, topic).items()}
    finally:
        c.close()


def read_since(
    kafka: KafkaSettings, topic: str, since: dict[int, int], keep: Callable[[Any], bool]
) -> list[Any]:
    """Records produced to `topic` after the `since` offsets that `keep` accepts."""
    c = slices.ops_consumer(kafka, "ops-test")
    try:
        ranges = [
            slices.PartitionRange(p, since.get(p, 0), hi)
            for p, (_lo, hi) in slices.watermarks(c, topic).items()
        ]
        return [m for batch in slices.read_ranges(c, topic, ranges) for m in batch if keep(m)]
    finally:
        c.close()


def set_ledger(session: Session, delivery: dict[str, Any], state: str) -> None:
    """What a sender records of `delivery` once its outcome is published."""
    session.execute(
        "INSERT INTO notification_log (notification_id, delivery_id, state, attempt, published,"
        " updated_at) VALUES (%s, %s, %s, 1, true, toTimestamp(now()))",
        (delivery["notification_id"], delivery["delivery_id"], state),
    )


def foreign_consumers(kafka: KafkaSettings, topic: str, ours: str | None = None) -> list[str]:
    """Groups (other than `ours`) with members assigned to `topic` right now."""
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid]
    busy = []
    for gid, fut in admin.describe_consumer_groups(groups).items() if groups else []:
        try:
            desc = fut.result()
        except Exception:  # the group went away meanwhile
            continue
        for m in desc.members:
            if gid != ours and any(tp.topic == topic for tp in m.assignment.topic_partitions):
                busy.append(gid)
                break
    return busy


def wait_until_unconsumed(kafka: KafkaSettings, topic: str, ours: str | None = None) -> None:
    """A sender still reading `topic` (one a previous test of this session left running)
    would take this test's records: wait for the topic to be ours, or fail naming it."""
    wait_for(
        lambda: not foreign_consumers(kafka, topic, ours),
        timeout=20,
        what=lambda: (
            f"no other consumer of {topic} (still: {foreign_consumers(kafka, topic, ours)})"
        ),
        every=1.0,
    )


@contextlib.contextmanager
def exclusive(kafka: KafkaSettings, topic: str, ours: str | None = None) -> Iterator[None]:
    """Run a block that needs `topic` to itself; the topic family is this session's own,
    so a failure inside is this code's."""
    wait_until_unconsumed(kafka, topic, ours)
    yield


def owns_topic(topic: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a test to run inside `exclusive(topic)`."""

    def wrap(test: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> None:
            with exclusive(KafkaSettings(bootstrap_servers=KAFKA), topic):
                test(*args, **kwargs)

        return run

    return wrap
