"""Senders dying, rebalancing and racing each other under load: nothing lost, nothing sent
twice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cassandra.cluster import Session

from herald.bench import load
from herald.bench.scenario import (
    FAST_SENDER_ENV,
    FAULTS_TOPIC_PREFIX,
    RequestFeed,
    mixed_requests,
    oracle_for,
    start_pipeline,
)
from herald.bench.services import Pipeline, wait_for_groups
from herald.ops import replay
from infra import topics
from infra.settings import KafkaSettings
from schemas.channels import Channel
from tests.faults.test_faults_duplicates import RunTopic
from tests.support import wait_for

pytestmark = pytest.mark.faults


@pytest.fixture
def own_pipeline(kafka: KafkaSettings) -> Iterator[Pipeline]:
    pipe = start_pipeline(kafka, "sender-kill", topic_prefix=FAULTS_TOPIC_PREFIX)
    yield pipe
    pipe.stop()


def publish_in_background(
    publisher: RequestFeed, requests: list[dict[str, object]], rate: float
) -> threading.Thread:
    t = threading.Thread(target=publisher.send, args=(requests,), kwargs={"rate": rate})
    t.start()
    return t


def test_sender_sigkill_mid_batch_then_restart(
    own_pipeline: Pipeline, users: list[load.User], publisher: RequestFeed, session: Session
) -> None:
    oracle = oracle_for(own_pipeline, session)
    try:
        requests = mixed_requests(users, 240)
        oracle.expect(requests)
        feeder = publish_in_background(publisher, requests, rate=80)
        wait_for(lambda: sum(oracle.ledger().values()) >= 40, 45, "40 deliveries")
        own_pipeline.kill("senders-1")
        own_pipeline.restart("senders-1")
        feeder.join(timeout=60)
        verdict = oracle.wait(timeout=75, quiet_s=3)
    finally:
        oracle.stop()
    assert not verdict.problems, verdict.summary()
    assert sum(verdict.counts.values()) == len(requests)


def test_two_senders_rebalance_mid_run(
    own_pipeline: Pipeline, users: list[load.User], publisher: RequestFeed, session: Session
) -> None:
    oracle = oracle_for(own_pipeline, session)
    try:
        requests = mixed_requests(users, 240)
        oracle.expect(requests)
        feeder = publish_in_background(publisher, requests, rate=60)
        wait_for(lambda: sum(oracle.ledger().values()) >= 30, 45, "30 deliveries")
        own_pipeline.start_sender(2, env=FAST_SENDER_ENV)  # joins: partitions move
        wait_for(lambda: sum(oracle.ledger().values()) >= 120, 45, "120 deliveries")
        own_pipeline.services["senders-1"].stop()  # leaves: its partitions move back
        feeder.join(timeout=60)
        verdict = oracle.wait(timeout=75, quiet_s=3)
    finally:
        oracle.stop()
    assert not verdict.problems, verdict.summary()
    assert sum(verdict.counts.values()) == len(requests)


def test_two_senders_racing_the_same_deliveries_send_each_once(
    kafka: KafkaSettings,
    own_pipeline: Pipeline,
    users: list[load.User],
    publisher: RequestFeed,
    session: Session,
) -> None:
    """A second sender in groups of its own reads every record the first one reads: every
    delivery is raced by both through the main lane, the retry tiers (a share of the sends
    is refused with 503) and a replay of the request window. The ledger's claims let one
    of them send it, once."""
    rival = "herald-sender-rival-" + own_pipeline.run_id
    own_pipeline.start_sender(2, env={**FAST_SENDER_ENV, "HERALD_GROUP_PREFIX": rival})
    wait_for_groups(kafka, [f"{rival}-{ch}" for ch in Channel], 1, 60)
    oracle = oracle_for(own_pipeline, session)
    try:
        own_pipeline.faults(provider="all", mode="error", status=503, rate=0.3)
        requests = mixed_requests(users, 60)
        oracle.expect(requests)
        start = datetime.now(UTC)
        publisher.send(requests)
        end = datetime.now(UTC)
        wait_for(lambda: oracle.settled(), 60, "the first pass to settle")
        own_pipeline.faults(provider="all", mode="ok")
        nids = [r["notification_id"] for r in requests]
        before = oracle.fanout_counts(nids)
        ref = RunTopic(own_pipeline.topic(topics.REQUESTED), None, "main")
        window = replay.ReplayRequest(
            ref, int(start.timestamp() * 1000), int(end.timestamp() * 1000) + 1, run_id="race"
        )
        assert replay.replay(kafka, None, window).scanned >= len(requests)
        wait_for(
            lambda: all(n > before[d] for d, n in oracle.fanout_counts(nids).items()),
            45,
            "the replayed requests to be fanned out again",
        )
        verdict = oracle.wait(timeout=60, quiet_s=3)
    finally:
        oracle.stop()
    assert not verdict.problems, verdict.summary()
    assert sum(verdict.counts.values()) == len(requests)
    assert verdict.receipts and all(n == 1 for n in verdict.receipts.values()), verdict.receipts
