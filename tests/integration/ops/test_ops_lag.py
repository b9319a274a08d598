"""The lag exporter, run as its real entry point, watching a group of this test's own."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from herald.services import ServiceSpec, free_port, python_module, running
from infra.settings import KafkaSettings
from tests.conftest import KAFKA
from tests.support import wait_for

pytestmark = pytest.mark.integration
TOPIC = "herald.test.ops-lag"  # created once, reused by every run; never deleted


@pytest.fixture(scope="module")
def topic(kafka: KafkaSettings) -> str:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    if TOPIC not in admin.list_topics(timeout=10).topics:
        for fut in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
            try:
                fut.result()
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    return TOPIC


def _lag(url: str, group: str) -> tuple[float, float] | None:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("group") == group and s.labels.get("topic") == TOPIC:
                found[s.name] = s.value
    if len(found) < 4:
        return None
    # One partition: the per-partition figures are the topic's.
    assert found["herald_consumer_partition_lag_records"] == found["herald_consumer_lag_records"]
    return found["herald_consumer_lag_records"], found["herald_consumer_lag_seconds"]


def test_lag_rises_without_consumer_and_falls_after(
    kafka: KafkaSettings, topic: str, tmp_path: Path
) -> None:
    group = f"herald-test-lag-{uuid.uuid4().hex[:10]}"
    consumer = Consumer(
        {**kafka.consumer_config("ops-test-lag", group), "enable.auto.commit": False}
    )
    _lo, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.commit(offsets=[TopicPartition(topic, 0, high)], asynchronous=False)
    port = free_port()
    spec = ServiceSpec(
        "lag",
        python_module("herald.ops.lag"),
        ready_port=port,
        env={
            "HERALD_KAFKA__BOOTSTRAP_SERVERS": KAFKA,
            "HERALD_LAG__PORT": str(port),
            "HERALD_LAG__HOST": "127.0.0.1",
            "HERALD_LAG__GROUPS": f'["{group}"]',
            "HERALD_LAG__INTERVAL_S": "0.3",
        },
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with running([spec], tmp_path):
            wait_for(lambda: _lag(url, group) == (0.0, 0.0), what="no lag before producing")

            producer = Producer(kafka.producer_config("ops-test-lag"))
            for i in range(5):
                producer.produce(topic, f"r{i}".encode(), b"k")
            assert producer.flush(10) == 0
            first = wait_for(
                lambda: (v := _lag(url, group)) and v[0] == 5 and v[1] > 0 and v,
                what=lambda: f"a lag of 5 records with an age (last seen {_lag(url, group)})",
            )
            # Nobody consumes: the oldest record only gets older.
            later = wait_for(
                lambda: (v := _lag(url, group)) and v[1] > first[1] + 0.3 and v,
                what=lambda: f"the oldest record's age to grow (last seen {_lag(url, group)})",
            )
            assert later[0] == 5

            consumer.assign([TopicPartition(topic, 0, high)])
            got = 0
            while got < 5:
                got += sum(1 for m in consumer.consume(5, timeout=2) if m.error() is None)
            consumer.commit(offsets=[TopicPartition(topic, 0, high + 5)], asynchronous=False)
            wait_for(
                lambda: _lag(url, group) == (0.0, 0.0),
                what=lambda: f"no lag after the commit (last seen {_lag(url, group)})",
            )
    finally:
        consumer.close()
        _forget(kafka, group)


def test_probe_reports_per_partition(kafka: KafkaSettings, topic: str) -> None:
    from herald.ops.lag import LagProbe, by_topic

    group = f"herald-test-lag-{uuid.uuid4().hex[:10]}"
    consumer = Consumer(
        {**kafka.consumer_config("ops-test-lag", group), "enable.auto.commit": False}
    )
    producer = Producer(kafka.producer_config("ops-test-lag"))
    for i in range(3):
        producer.produce(topic, f"p{i}".encode(), b"k")
    assert producer.flush(10) == 0
    try:
        _lo, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.commit(offsets=[TopicPartition(topic, 0, high - 3)], asynchronous=False)
        probe = LagProbe(kafka)
        try:
            (part,) = probe.measure([group])
        finally:
            probe.close()
        assert (part.topic, part.partition, part.records) == (topic, 0, 3)
        assert part.oldest_ms is not None
        (summary,) = by_topic([part], part.oldest_ms + 2000)
        assert summary.seconds == pytest.approx(2.0)
    finally:
        consumer.close()
        _forget(kafka, group)


def _forget(kafka: KafkaSettings, group: str) -> None:
    """Drop this test's group so it does not linger in `herald status`."""
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for fut in admin.delete_consumer_groups([group], request_timeout=10).values():
        fut.result()
