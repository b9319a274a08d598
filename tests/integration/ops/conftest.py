"""Fixtures for the ops integration tests: the real Kafka and Cassandra, unique ids."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session
from confluent_kafka import Producer

from infra.cassandra import connect
from infra.settings import CassandraSettings, KafkaSettings
from tests.conftest import CASSANDRA_PORT, KAFKA


@pytest.fixture(scope="session")
def kafka() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=KAFKA)


@pytest.fixture(scope="session")
def session() -> Iterator[Session]:
    s = connect(CassandraSettings(port=CASSANDRA_PORT))
    yield s
    s.cluster.shutdown()


@pytest.fixture(scope="session", autouse=True)
def topic_family(kafka: KafkaSettings) -> Iterator[str]:
    from confluent_kafka.admin import AdminClient

    from herald.bench.services import ensure_prefixed_topics
    from tests.integration.ops.opskit import PREFIX

    ensure_prefixed_topics(kafka, PREFIX)
    yield PREFIX
    admin = AdminClient(kafka.base_config("ops-test"))
    ours = [t for t in admin.list_topics(timeout=10).topics if t.startswith(PREFIX)]
    for fut in admin.delete_topics(ours).values() if ours else []:
        with contextlib.suppress(Exception):
            fut.result(timeout=30)


@pytest.fixture(scope="session")
def producer(kafka: KafkaSettings) -> Producer:
    return Producer(kafka.producer_config("ops-test"))


@pytest.fixture
def category() -> str:
    """A category no one else uses, so a replay filtered on it sees only this test's records."""
    return f"opstest-{uuid.uuid4().hex[:10]}"
