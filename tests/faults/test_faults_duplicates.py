"""The same request twice, and a delivered window replayed: nothing is sent twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from herald.bench import load
from herald.bench.oracle import Oracle
from herald.bench.scenario import RequestFeed, mixed_requests
from herald.bench.services import Pipeline
from herald.ops import replay
from herald.ops.common import TopicRef
from infra import topics
from infra.settings import KafkaSettings
from schemas import codec
from tests.support import wait_for

pytestmark = pytest.mark.faults


def test_same_request_published_twice_is_delivered_once(
    users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    requests = mixed_requests(users, 12)
    oracle.expect(requests)
    publisher.send(requests)
    # Back to back: the copy races the original through the processor.
    for r in requests[:6]:
        publisher.raw(r["user_id"].encode(), codec.encode(codec.REQUEST, r))
    publisher.flush()
    wait_for(lambda: oracle.settled(), 45, "the originals to settle")
    # Later: the copy arrives after the original was delivered.
    for r in requests[6:]:
        publisher.raw(r["user_id"].encode(), codec.encode(codec.REQUEST, r))
    publisher.flush()
    time.sleep(3)  # a double send would reach the emulator within this window
    verdict = oracle.wait(timeout=30, quiet_s=3)
    assert not verdict.problems, verdict.summary()
    assert verdict.counts["delivered"] == len(requests)
    assert all(n == 1 for n in verdict.receipts.values())


class RunTopic(TopicRef):
    """A request topic under the run's prefix: replayed records go back to it."""

    @property
    def main(self) -> str:
        return self.name


def test_replayed_window_sends_nothing_twice(
    kafka: KafkaSettings,
    pipeline: Pipeline,
    users: list[load.User],
    oracle: Oracle,
    publisher: RequestFeed,
) -> None:
    requests = mixed_requests(users, 16)
    oracle.expect(requests)
    start = datetime.now(UTC)
    publisher.send(requests)
    end = datetime.now(UTC)
    first = oracle.wait(timeout=45)
    assert not first.problems, first.summary()
    nids = [r["notification_id"] for r in requests]
    before = oracle.fanout_counts(nids)

    # `herald replay --topic requests`, on this run's own copy of the request topic.
    ref = RunTopic(pipeline.topic(topics.REQUESTED), None, "main")
    window = replay.ReplayRequest(
        ref, int(start.timestamp() * 1000), int(end.timestamp() * 1000) + 1, run_id="faults"
    )
    outcome = replay.replay(kafka, None, window)
    assert outcome.scanned >= len(requests)
    # The processor fans the replayed requests out again, to the same delivery ids.
    wait_for(
        lambda: all(n > before[d] for d, n in oracle.fanout_counts(nids).items()),
        45,
        "the replayed requests to be fanned out again",
    )
    verdict = oracle.wait(timeout=30, quiet_s=3)
    assert not verdict.problems, verdict.summary()
    assert all(n == 1 for n in verdict.receipts.values()), verdict.receipts
