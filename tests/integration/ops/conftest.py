"""Fixtures for the ops integration tests: the real Kafka and Cassandra, unique ids."""

from __future__ import annotations

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
def topic_family(kafka: KafkaSettings) -> str:
    from herald.bench.services import ensure_prefixed_topics
    from tests.integration.ops.opskit import PREFIX

    ensure_prefixed_topics(kafka, PREFIX)
    return PREFIX


@pytest.fixture(scope="session")
def producer(kafka: KafkaSettings) -> Producer:
    return Producer(kafka.producer_config("ops-test"))


@pytest.fixture
def category() -> str:
    """A category no one else uses, so a replay filtered on it sees only this test's records."""
    return f"opstest-{uuid.uuid4().hex[:10]}"
