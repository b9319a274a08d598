"""Suite-wide checks: integration tests need the real stack, and say so when it is down."""

from __future__ import annotations

import os
import socket

import pytest

from infra.settings import DEV_PROFILE, CassandraSettings, KafkaSettings

# The services the suite starts inherit this: they run on a local stack with the secrets
# published in herald's source, which they refuse without it.
os.environ.setdefault("HERALD_PROFILE", DEV_PROFILE)

KAFKA = os.environ.get("HERALD_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
CASSANDRA_PORT = int(os.environ.get("HERALD_CASSANDRA__PORT", "9042"))
# What tests pass to clients they build themselves (services read the same variables).
KAFKA_SETTINGS = KafkaSettings(bootstrap_servers=KAFKA)
CASSANDRA_SETTINGS = CassandraSettings(port=CASSANDRA_PORT)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack_is_up() -> None:
    host, port = KAFKA.split(",")[0].rsplit(":", 1)
    missing = [
        name
        for name, ok in (
            (f"Kafka at {KAFKA}", _reachable(host, int(port))),
            (f"Cassandra at 127.0.0.1:{CASSANDRA_PORT}", _reachable("127.0.0.1", CASSANDRA_PORT)),
        )
        if not ok
    ]
    if missing:
        pytest.fail(f"{', '.join(missing)} not reachable: run `make stack-up` first", pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every integration test gets the stack check, so a down stack fails fast and clearly.
    for item in items:
        if item.get_closest_marker("integration") or item.get_closest_marker("e2e"):
            item.fixturenames.insert(0, "stack_is_up")
