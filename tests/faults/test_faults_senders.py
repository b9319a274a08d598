"""Senders dying and rebalancing under load: nothing lost, nothing sent twice."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session

from herald.bench import load
from herald.bench.scenario import (
    FAST_SENDER_ENV,
    FAULTS_TOPIC_PREFIX,
    Publisher,
    mixed_requests,
    oracle_for,
    start_pipeline,
    wait_until,
)
from herald.bench.services import Pipeline
from infra.settings import KafkaSettings

pytestmark = pytest.mark.faults


@pytest.fixture
def own_pipeline(kafka: KafkaSettings) -> Iterator[Pipeline]:
    pipe = start_pipeline(kafka, "sender-kill", topic_prefix=FAULTS_TOPIC_PREFIX)
    yield pipe
    pipe.stop()


def publish_in_background(
    publisher: Publisher, requests: list[dict[str, object]], rate: float
) -> threading.Thread:
    t = threading.Thread(target=publisher.send, args=(requests,), kwargs={"rate": rate})
    t.start()
    return t


def test_sender_sigkill_mid_batch_then_restart(
    own_pipeline: Pipeline, users: list[load.User], publisher: Publisher, session: Session
) -> None:
    oracle = oracle_for(own_pipeline, session)
    try:
        requests = mixed_requests(users, 240)
        oracle.expect(requests)
        feeder = publish_in_background(publisher, requests, rate=80)
        wait_until(lambda: sum(oracle.ledger().values()) >= 40, 45, "40 deliveries")
        own_pipeline.kill("senders-1")
        own_pipeline.restart("senders-1")
        feeder.join(timeout=60)
        verdict = oracle.wait(timeout=75, quiet_s=3)
    finally:
        oracle.stop()
    assert not verdict.problems, verdict.summary()
    assert sum(verdict.counts.values()) == len(requests)


def test_two_senders_rebalance_mid_run(
    own_pipeline: Pipeline, users: list[load.User], publisher: Publisher, session: Session
) -> None:
    oracle = oracle_for(own_pipeline, session)
    try:
        requests = mixed_requests(users, 240)
        oracle.expect(requests)
        feeder = publish_in_background(publisher, requests, rate=60)
        wait_until(lambda: sum(oracle.ledger().values()) >= 30, 45, "30 deliveries")
        own_pipeline.start_sender(2, env=FAST_SENDER_ENV)  # joins: partitions move
        wait_until(lambda: sum(oracle.ledger().values()) >= 120, 45, "120 deliveries")
        own_pipeline.services["senders-1"].stop()  # leaves: its partitions move back
        feeder.join(timeout=60)
        verdict = oracle.wait(timeout=75, quiet_s=3)
    finally:
        oracle.stop()
    assert not verdict.problems, verdict.summary()
    assert sum(verdict.counts.values()) == len(requests)
