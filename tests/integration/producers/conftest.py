"""Shared fixtures for intake tests against the real Kafka and Cassandra."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from cassandra.cluster import Session

from infra.cassandra import connect
from producers.api import Intake, create_app
from producers.contacts import Directory
from producers.publisher import AsyncPublisher
from producers.settings import IntakeSettings
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


# Per test module: the API under test, in process (ASGI), on the real Kafka and Cassandra.
@pytest.fixture(scope="module")
async def intake() -> AsyncIterator[Intake]:
    it = Intake(IntakeSettings())
    await it.start()
    yield it
    await it.close()


@pytest.fixture
async def api(intake: Intake) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(intake.settings, intake))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
        yield client
