"""The worker reads the records Faust skipped again (processors/gaps.py): exactly the
offsets asked for, in order, and the offsets that retention already deleted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.settings import KafkaSettings
from processors.gaps import Refetcher, RefetchTimeout
from tests.conftest import KAFKA

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=KAFKA)


@pytest.fixture
def topic(kafka: KafkaSettings) -> Iterator[str]:
    name = f"herald.test.refetch-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for fut in admin.create_topics([NewTopic(name, 2, 1)]).values():
        fut.result()
    producer = Producer(kafka.producer_config("test-refetch"))
    for i in range(20):
        producer.produce(name, f"v{i}".encode(), key=b"k", partition=1, headers=[("n", b"%d" % i)])
    producer.flush(30)
    yield name
    admin.delete_topics([name])


def test_reads_exactly_the_offsets_asked_for(kafka: KafkaSettings, topic: str) -> None:
    refetcher = Refetcher(kafka)
    try:
        got = refetcher.fetch(topic, 1, range(5, 12))
        assert [r.offset() for r in got.records] == list(range(5, 12))
        assert [r.value() for r in got.records] == [f"v{i}".encode() for i in range(5, 12)]
        assert got.records[0].headers() == [("n", b"5")]
        assert not got.gone
        # The same reader serves the next gap, on another range.
        again = refetcher.fetch(topic, 1, range(0, 1))
        assert [r.offset() for r in again.records] == [0]
    finally:
        refetcher.close()


def test_offsets_deleted_by_retention_are_reported_gone(kafka: KafkaSettings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for fut in admin.delete_records([TopicPartition(topic, 1, 8)]).values():
        fut.result()
    refetcher = Refetcher(kafka)
    try:
        got = refetcher.fetch(topic, 1, range(3, 12))
        assert got.gone == range(3, 8)
        assert [r.offset() for r in got.records] == list(range(8, 12))
        whole = refetcher.fetch(topic, 1, range(2, 6))
        assert whole.gone == range(2, 6) and whole.records == []
    finally:
        refetcher.close()


def test_offsets_that_never_arrive_time_out(kafka: KafkaSettings, topic: str) -> None:
    refetcher = Refetcher(kafka)
    try:
        with pytest.raises(RefetchTimeout, match="offsets 25 to 29"):
            refetcher.fetch(topic, 1, range(25, 30), timeout_s=2)
    finally:
        refetcher.close()
