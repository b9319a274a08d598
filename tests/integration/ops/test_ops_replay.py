"""Replay over a real Kafka window, judged by the real Cassandra ledger."""

from __future__ import annotations

import time
import uuid

import pytest
from cassandra.cluster import Session
from confluent_kafka import Producer

from herald.ops import slices
from herald.ops.common import topic_ref
from herald.ops.replay import ReplayRequest, replay
from infra import topics
from infra.settings import KafkaSettings
from schemas import codec
from schemas.events import now_ms
from tests.integration.ops.opskit import (
    PREFIX,
    delivery,
    end_offsets,
    owns_topic,
    produce_records,
    read_since,
    set_ledger,
)

pytestmark = pytest.mark.integration
# The priority lane of web push: few other tests write there, so the window stays small.
TOPIC = PREFIX + "notifications.push.web.priority"


def _ids_in(msgs: list, schema: str, field: str) -> list[str]:  # type: ignore[type-arg]
    return [codec.decode(m.value(), schema)[field] for m in msgs]


@owns_topic(TOPIC)
def test_channel_window_replays_only_what_the_ledger_lacks(
    kafka: KafkaSettings, session: Session, producer: Producer, category: str
) -> None:
    start = now_ms() - 1
    records = [delivery("push.web", category) for _ in range(7)]
    produce_records(producer, TOPIC, records)
    # A record of another category in the same window must be filtered out.
    produce_records(producer, TOPIC, [delivery("push.web", category + "-other")])
    end = now_ms() + 1
    for r, state in zip(
        records, ["sent", "sent", "failed", "dead_lettered", "sending"], strict=False
    ):
        set_ledger(session, r, state)
    missing = {r["delivery_id"] for r in records[5:]}
    mine = {r["delivery_id"] for r in records}
    req = ReplayRequest(
        topic_ref(TOPIC, prefix=PREFIX), start, end, category=category, dry_run=True
    )

    before = end_offsets(kafka, TOPIC)
    dry = replay(kafka, session, req)
    assert dry.total_produced == 2
    assert set(dry.sample) == missing  # the dry run names what it would send
    assert dry.skipped["already_sent"] == 2
    assert dry.skipped["already_failed"] == 1
    assert dry.skipped["already_dead_lettered"] == 1
    assert dry.skipped["in_flight"] == 1
    assert dry.skipped["other_category"] >= 1
    # Dry run: none of this test's deliveries appeared again.
    assert not read_since(
        kafka, TOPIC, before, lambda m: codec.decode(m.value())["delivery_id"] in mine
    )

    before = end_offsets(kafka, TOPIC)
    real = replay(
        kafka,
        session,
        ReplayRequest(topic_ref(TOPIC, prefix=PREFIX), start, end, category=category),
    )
    assert real.produced == {TOPIC: 2} and not real.errors
    again = read_since(
        kafka, TOPIC, before, lambda m: codec.decode(m.value())["delivery_id"] in mine
    )
    assert sorted(_ids_in(again, codec.DELIVERY, "delivery_id")) == sorted(missing)
    assert all(slices.headers(m)["herald.replay"] == b"1" for m in again)


@owns_topic(TOPIC)
def test_window_bounds_come_from_offsets_for_times(
    kafka: KafkaSettings, session: Session, producer: Producer, category: str
) -> None:
    early = [delivery("push.web", category)]
    produce_records(producer, TOPIC, early)
    time.sleep(0.05)  # timestamps are ms: the window must start strictly after `early`
    start = now_ms()
    inside = [delivery("push.web", category) for _ in range(3)]
    produce_records(producer, TOPIC, inside)
    end = now_ms() + 1
    req = ReplayRequest(
        topic_ref(TOPIC, prefix=PREFIX), start, end, category=category, dry_run=True
    )
    outcome = replay(kafka, session, req)
    assert outcome.total_produced == 3


def test_request_topic_replay_marks_records(
    kafka: KafkaSettings, producer: Producer, category: str
) -> None:
    start = now_ms() - 1
    reqs = [
        {
            "event_id": str(uuid.uuid4()),
            "notification_id": str(uuid.uuid4()),
            "source": "ops-test",
            "user_id": f"u-{uuid.uuid4().hex[:8]}",
            "category": category,
            "channels": channels,
            "created_at": now_ms(),
        }
        for channels in (["email"], ["sms"], [])
    ]
    requested = PREFIX + topics.REQUESTED
    produce_records(producer, requested, reqs, schema=codec.REQUEST)
    end = now_ms() + 1
    before = end_offsets(kafka, requested)
    ref = topic_ref("requests", prefix=PREFIX)
    req = ReplayRequest(ref, start, end, channel="email", category=category)
    outcome = replay(kafka, None, req)
    assert outcome.produced == {requested: 2}  # email + "every channel"
    assert outcome.skipped["other_channel"] == 1
    mine = {r["event_id"] for r in reqs}
    again = read_since(
        kafka,
        requested,
        before,
        lambda m: codec.decode(m.value())["event_id"] in mine,
    )
    assert sorted(_ids_in(again, codec.REQUEST, "event_id")) == sorted(
        r["event_id"] for r in reqs[::2]
    )
    assert all(slices.headers(m)["herald.replay"] == b"1" for m in again)
