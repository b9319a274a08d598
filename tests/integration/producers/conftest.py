"""Shared fixtures for intake tests against the real Kafka and Cassandra."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from cassandra.cluster import Session

from infra.cassandra import connect
from producers.contacts import Directory
from producers.publisher import AsyncPublisher
from tests.conftest import CASSANDRA_SETTINGS
from tests.integration.producers.intakekit import KAFKA


@pytest.fixture(scope="session")
def session() -> Iterator[Session]:
    s = connect(CASSANDRA_SETTINGS)
    yield s
    s.cluster.shutdown()


@pytest.fixture
async def apublisher() -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher(KAFKA, client="test-intake") as pub:
        yield pub


@pytest.fixture
async def directory(session: Session, apublisher: AsyncPublisher) -> Directory:
    return Directory(session, apublisher, hmac_key=b"test-key")
