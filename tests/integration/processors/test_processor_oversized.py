"""Records Kafka refuses for good never stall a partition, and a SIGKILL behind one loses
nothing: a request whose fan-out is over Kafka's record limit, and a record too large to
dead-letter whole, each end in a dead letter with a reason while later requests go on.
(The outage scenarios of the commit rule are in test_processor_commit.py.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from tests.conftest import KAFKA
from tests.integration.processors.prockit import Harness, census, make_harness
from tests.support import wait_for

pytestmark = [pytest.mark.integration]

USERS = 200


@pytest.fixture
def harness() -> Iterator[Harness]:
    yield from make_harness()


@pytest.mark.parametrize("group", ["new", "existing"])
def test_sigkill_behind_a_stuck_request_loses_nothing(harness: Harness, group: str) -> None:
    """A request that cannot finish (its fan-out is over Kafka's record limit) holds its
    user's next request; later offsets of other users finish. A SIGKILL then must not
    leave either request of that user below the committed offset."""
    h = harness
    h.start()
    others = [h.user() for _ in range(USERS)]
    warm: list[str] = []
    if group == "existing":
        warm = [h.publish(h.request(u, channels=["sms"])) for u in others]
        wait_for(lambda: all(h.watcher.outcomes(n) for n in warm), timeout=60, what="warm-up")
        time.sleep(2)  # committed offsets exist in every partition
    template = f"big-{uuid.uuid4().hex[:8]}"
    h.session.execute(
        "INSERT INTO templates (template_id, locale, channel, subject, body, html)"
        " VALUES (%s, 'en', 'email', '{{ p }}', '{{ p }}', '<p>{{ p }}</p>')",
        (template,),
    )
    stuck_user = h.user()
    # 400 KB of parameter, three times in the email: a 1.2 MB delivery record.
    big = h.publish(
        h.request(stuck_user, channels=["email"], template_id=template, params={"p": "x" * 400_000})
    )
    queued = h.publish(h.request(stuck_user, channels=["sms"]))
    later = [h.publish(h.request(u, channels=["sms"])) for u in others]
    wait_for(lambda: all(h.watcher.outcomes(n) for n in later), timeout=60, what="later offsets")
    time.sleep(2)  # two commit intervals
    h.kill()
    h.start()
    wait_for(lambda: h.watcher.outcomes(queued), timeout=60, what="the queued request decided")
    everyone = [queued, *later, *warm]
    lost, doubled = census(h, everyone, expect=("accepted", None, None), deliveries=1)
    assert (lost, doubled) == ([], [])
    wait_for(
        lambda: h.watcher.dead_letters(stuck_user.encode()),
        timeout=30,
        what="the oversized request dead-lettered",
    )
    (headers,) = h.watcher.dead_letters(stuck_user.encode())
    assert headers["herald.reason"] == b"too_large"
    assert h.watcher.outcomes(big) == [("dropped", "too_large", None)]


def test_a_record_too_large_to_dead_letter_whole_is_truncated(harness: Harness) -> None:
    """1,000,001 to 1,048,588 bytes: the broker stores it, herald's producer cannot copy it."""
    h = harness
    h.start()
    key = f"it-{uuid.uuid4().hex}".encode()
    junk = b"x" * 1_040_000
    big = Producer({"bootstrap.servers": KAFKA, "message.max.bytes": 1_100_000})
    big.produce(h.topic, junk, key)
    assert big.flush(30) == 0
    user = h.user()
    after = h.publish(h.request(user, channels=["sms"]))  # the partition moves on
    wait_for(lambda: h.watcher.dead_letters(key), timeout=60, what="the dead letter")
    (headers,) = h.watcher.dead_letters(key)
    assert headers["herald.reason"] == b"bad_magic"
    assert headers["herald.truncated_from"] == str(len(junk)).encode()
    wait_for(lambda: h.watcher.outcomes(after), timeout=60, what="the next request decided")
