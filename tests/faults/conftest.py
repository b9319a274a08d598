"""Fault suite fixtures: a private pipeline (own emulators, own consumer groups), seeded
users, a publisher that stamps requests, and the oracle that judges every published id.

The building blocks live in `herald.bench.scenario`, shared with the processor's kill test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session

from herald.bench import load
from herald.bench.oracle import Oracle
from herald.bench.scenario import FAULTS_TOPIC_PREFIX, RequestFeed, oracle_for, start_pipeline
from herald.bench.services import Pipeline
from infra import topics
from infra.cassandra import connect
from infra.settings import KafkaSettings
from tests.conftest import CASSANDRA_SETTINGS, KAFKA_SETTINGS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path):
            item.add_marker(pytest.mark.faults)
            item.fixturenames.insert(0, "stack_is_up")


@pytest.fixture(scope="session")
def kafka() -> KafkaSettings:
    return KAFKA_SETTINGS


@pytest.fixture(scope="session")
def session() -> Iterator[Session]:
    s = connect(CASSANDRA_SETTINGS)
    yield s
    s.cluster.shutdown()


@pytest.fixture(scope="module")
def users(session: Session) -> list[load.User]:
    """Users who get everything: 1 to 2 devices, valid contacts, no opt-outs."""
    population = load.make_users(
        40, prefix=f"faults-{uuid.uuid4().hex[:8]}", devices_per_user=(1, 2), opt_out_share=0.0
    )
    load.seed_cassandra(session, population)
    return population


@pytest.fixture(scope="module")
def pipeline(kafka: KafkaSettings, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    """One pipeline shared by a module's scenarios that do not kill anything."""
    name = request.module.__name__.rsplit(".", 1)[-1][:24]
    pipe = start_pipeline(kafka, name, topic_prefix=FAULTS_TOPIC_PREFIX)
    yield pipe
    pipe.stop()


@pytest.fixture
def oracle(kafka: KafkaSettings, pipeline: Pipeline, session: Session) -> Iterator[Oracle]:
    pipeline.reset()
    o = oracle_for(pipeline, session)
    yield o
    o.stop()


@pytest.fixture
def publisher(kafka: KafkaSettings) -> RequestFeed:
    return RequestFeed(kafka, FAULTS_TOPIC_PREFIX + topics.REQUESTED)
