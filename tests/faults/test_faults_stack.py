"""Kafka or Cassandra restarted under load (`python -m infra.stack restart <component>`).

These restart the shared servers: run them with `make test-faults`, not next to other work.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session

from herald.bench import load
from herald.bench.scenario import (
    FAULTS_TOPIC_PREFIX,
    RequestFeed,
    mixed_requests,
    oracle_for,
    start_pipeline,
)
from herald.bench.services import Pipeline
from infra import topics
from infra.settings import KafkaSettings
from tests.support import wait_for

pytestmark = pytest.mark.faults


@pytest.fixture
def own_pipeline(kafka: KafkaSettings) -> Iterator[Pipeline]:
    pipe = start_pipeline(kafka, "stack-restart", topic_prefix=FAULTS_TOPIC_PREFIX)
    yield pipe
    pipe.stop()


@pytest.mark.parametrize("component", ["kafka", "cassandra"])
def test_restart_under_load(
    component: str,
    own_pipeline: Pipeline,
    users: list[load.User],
    kafka: KafkaSettings,
    session: Session,
) -> None:
    oracle = oracle_for(own_pipeline, session)
    publisher = RequestFeed(kafka, own_pipeline.topic(topics.REQUESTED))
    try:
        requests = mixed_requests(users, 200)
        oracle.expect(requests)
        feeder = threading.Thread(target=publisher.send, args=(requests,), kwargs={"rate": 40})
        feeder.start()
        wait_for(lambda: sum(oracle.ledger().values()) >= 20, 45, "20 deliveries")
        done = subprocess.run(
            [sys.executable, "-m", "infra.stack", "restart", component],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-1000:]
        feeder.join(timeout=90)
        verdict = oracle.wait(timeout=90, quiet_s=3)
    finally:
        oracle.stop()
    assert not verdict.problems, verdict.summary()
    assert sum(verdict.counts.values()) == len(requests)
