"""The request priority lane: an urgent request overtakes a backlog of ordinary ones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest

from schemas import codec
from tests.integration.processors.prockit import Harness, create_topics, make_harness
from tests.support import wait_for

pytestmark = pytest.mark.integration

BACKLOG = 3000


@pytest.fixture
def lanes() -> Iterator[tuple[Harness, str]]:
    priority = f"test.processor.{uuid.uuid4().hex[:10]}.requested.priority"
    create_topics([priority])
    for h in make_harness({"HERALD_REQUESTED_PRIORITY_TOPIC": priority}):
        yield h, priority


def test_urgent_request_overtakes_a_backlog(lanes: tuple[Harness, str]) -> None:
    h, priority = lanes
    # One user's requests run strictly in order, so this backlog drains one at a time and
    # fills every in-flight slot of the ordinary lane.
    bulk = h.user()
    backlog = [h.request(bulk, category="transactional", channels=["sms"]) for _ in range(BACKLOG)]
    for r in backlog:
        h.producer.produce(h.topic, codec.encode(codec.REQUEST, r), bulk.encode())
    # The urgent request waits behind the whole backlog too, so the only way it is
    # decided first is its own lane (both lanes start with the same assignment; decided
    # in batches, a backlog produced after the start could drain before the lane is up).
    urgent_user = h.user()
    urgent = h.request(urgent_user, category="security", priority="high", channels=["sms"])
    h.producer.produce(priority, codec.encode(codec.REQUEST, urgent), urgent_user.encode())
    h.producer.flush(30)
    h.start()

    def accepted_at(nid: str) -> datetime | None:
        with h.watcher.lock:
            events = list(h.watcher.statuses.get(nid, []))
        return next((e["occurred_at"] for e in events if e["outcome"] == "accepted"), None)

    # Judged by when the processor decided each request (the statuses' own times), not by
    # what the watcher has read when it sees the urgent one: the backlog drains in about a
    # second, faster than a poll can count it.
    urgent_at = wait_for(lambda: accepted_at(urgent["notification_id"]), 60, "urgent accepted")

    def backlog_accepted() -> list[datetime] | None:
        times = [accepted_at(r["notification_id"]) for r in backlog]
        return [t for t in times if t is not None] if None not in times else None

    backlog_at = wait_for(backlog_accepted, 60, "the backlog accepted")
    later = sum(1 for t in backlog_at if t > urgent_at)
    assert later > 0, "every backlog request was decided before the urgent one"
    # `accepted` follows the deliveries' acks, but the watcher reads the two topics apart.
    delivered = wait_for(lambda: h.watcher.delivered(urgent["notification_id"]), 10, "delivery")
    [(topic, _d)] = delivered
    assert topic == "notifications.sms.priority"
    print(f"\nurgent request accepted with {later} of {BACKLOG} backlog requests waiting")
