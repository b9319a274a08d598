"""Real Kafka and Cassandra for the sender runtime: a tap on topics, records, the ledger."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cassandra.cluster import Session
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.cassandra import connect
from infra.settings import CassandraSettings, KafkaSettings
from schemas import codec
from schemas.events import now_ms
from tests.conftest import CASSANDRA_PORT, KAFKA
from tests.support import wait_for


class TopicTap:
    """Everything produced to `topics` from now on, decoded, read in a background thread."""

    def __init__(self, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes | None, dict[str, bytes], dict[str, Any] | None]] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": KAFKA,
                "group.id": f"test-tap-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        parts = []
        for name in topics:
            topic = PREFIX + name
            meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                parts.append(TopicPartition(topic, p, high))
        self._consumer.assign(parts)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            try:
                value = codec.decode(msg.value() or b"")
            except codec.DecodeError:
                value = None
            headers = {h[0]: h[1] for h in msg.headers() or [] if isinstance(h[1], bytes)}
            topic = (msg.topic() or "").removeprefix(PREFIX)
            self.messages.append((topic, msg.key(), headers, value))

    def where(
        self, **match: Any
    ) -> list[tuple[str, bytes | None, dict[str, bytes], dict[str, Any]]]:
        return [
            (t, k, h, v)
            for t, k, h, v in list(self.messages)
            if v is not None and all(v.get(f) == x for f, x in match.items())
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def make_delivery(channel: str, **over: Any) -> dict[str, Any]:
    nid = str(uuid.uuid4())
    d: dict[str, Any] = {
        "delivery_id": str(uuid.uuid4()),
        "notification_id": nid,
        "event_id": f"evt-{nid}",
        "user_id": f"user-{uuid.uuid4()}",
        "channel": channel,
        "category": "transactional",
        "priority": "normal",
        "device_id": None,
        "address": "+15550001111" if channel == "sms" else "tok-" + uuid.uuid4().hex,
        "body": "your code is 1234",
        "attempt": 1,
        "requested_at": now_ms(),
        "created_at": now_ms(),
    }
    d.update(over)
    return d


# Every test session runs the senders on its own copy of the topics (the sender's
# `topic_prefix`), so a demo, an end-to-end run or another checkout's test run on the same
# broker never steals its records, and it never steals theirs. Deleted at the end.
PREFIX = f"test-senders.{uuid.uuid4().hex[:8]}."
CHANNELS = ("sms", "push.ios", "email", "inapp")


@pytest.fixture(scope="session", autouse=True)
def sender_topics() -> Iterator[None]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    from infra import topics

    wanted = [
        spec
        for spec in topics.all_topics()
        if spec.name in (topics.STATUS, topics.USER_CHANGES)
        or any(f"notifications.{c}." in spec.name + "." for c in CHANNELS)
    ]
    admin = AdminClient({"bootstrap.servers": KAFKA})
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [s for s in wanted if PREFIX + s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(PREFIX + s.name, s.partitions, s.replication, config=s.config())
                for s in missing
            ]
        )
        for fut in futures.values():
            try:
                fut.result()
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        wait_for(
            lambda: all(PREFIX + s.name in admin.list_topics(timeout=10).topics for s in missing),
            30,
            "test topics",
        )
    yield
    for fut in admin.delete_topics([PREFIX + s.name for s in wanted]).values():
        with contextlib.suppress(KafkaException):
            fut.result(timeout=30)


@pytest.fixture(scope="session")
def kafka_producer() -> Iterator[Producer]:
    producer = Producer(KafkaSettings(bootstrap_servers=KAFKA).producer_config("test-senders"))
    yield producer
    producer.flush(10)


@pytest.fixture(scope="session")
def produce(kafka_producer: Producer) -> Callable[[str, dict[str, Any]], None]:
    def _produce(topic: str, delivery: dict[str, Any]) -> None:
        kafka_producer.produce(
            PREFIX + topic, codec.encode(codec.DELIVERY, delivery), delivery["user_id"].encode()
        )
        kafka_producer.flush(10)

    return _produce


def ledger_row(session: Session, delivery: dict[str, Any]) -> dict[str, Any] | None:
    """The delivery's row in the senders' ledger (`senders.ledger.TABLE`), wherever its
    Kafka partition put it, with `published`: whether the `deliveries` view shows this
    very outcome, which the senders write only once its records are acknowledged."""
    from infra import topics
    from senders.ledger import MINUTE_MS, TABLE

    slots = ", ".join(str(i) for i in range(max(s.partitions for s in topics.all_topics())))
    row: dict[str, Any] | None = session.execute(
        f"SELECT * FROM {TABLE} WHERE slot IN ({slots}) AND minute = %s AND delivery_id = %s",
        (delivery["requested_at"] // MINUTE_MS, delivery["delivery_id"]),
    ).one()
    if row is None:
        return None
    view = session.execute(
        "SELECT attempt, state, published FROM notification_log"
        " WHERE notification_id = %s AND delivery_id = %s",
        (delivery["notification_id"], delivery["delivery_id"]),
    ).one()
    row["published"] = bool(
        view
        and view["published"]
        and (view["attempt"], view["state"]) == (row["attempt"], row["state"])
    )
    return row


@pytest.fixture(scope="session")
def cassandra() -> Iterator[Session]:
    session = connect(CassandraSettings(port=CASSANDRA_PORT))
    yield session
    session.cluster.shutdown()
