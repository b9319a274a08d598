"""Records the consumer skipped are read again and decided (processors/gaps.py).

The processor runs with a consumer that drops the first records of every partition it
fetches, as faust-streaming 0.15 does right after a restart's recovery. Without the
worker reading them again those requests get no outcome and the partition's commit stays
at the first of them; with it, every request gets exactly one outcome, each user's
requests in the order published, and the group commits to the end of every partition.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.settings import KafkaSettings
from processors.gaps import Refetcher
from schemas import codec
from tests.conftest import KAFKA
from tests.integration.processors.prockit import PARTITIONS, Harness, census, make_harness
from tests.support import wait_for

pytestmark = pytest.mark.integration

SKIP = 5
USERS = 30
PER_USER = 6


@pytest.fixture
def skipping() -> Iterator[Harness]:
    for h in make_harness({"HERALD_TEST_SKIP_FIRST": str(SKIP), "HERALD_BATCH_SIZE": "20"}):
        h.module = "tests.integration.processors.skipping"
        yield h


def _committed(h: Harness) -> dict[int, tuple[int, int]]:
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": h.env["HERALD_APP_ID"]})
    try:
        tps = [TopicPartition(h.topic, p) for p in range(PARTITIONS)]
        return {
            tp.partition: (tp.offset, consumer.get_watermark_offsets(tp, timeout=10)[1])
            for tp in consumer.committed(tps, timeout=10)
        }
    finally:
        consumer.close()


def _users(h: Harness) -> list[str]:
    """At least USERS users, and at least 3 keyed to each partition (librdkafka's default
    partitioner: the key's CRC-32), so that no partition is left empty by chance: every
    check here is per partition, and 30 random users left one empty in ~2.5% of runs."""
    users: list[str] = []
    per_partition: Counter[int] = Counter()
    while len(users) < USERS or min(per_partition[p] for p in range(PARTITIONS)) < 3:
        users.append(h.user())
        per_partition[zlib.crc32(users[-1].encode()) % PARTITIONS] += 1
    return users


def _publish(h: Harness, users: list[str]) -> list[str]:
    """Requests of every user, interleaved: each partition gets several users' records."""
    return [h.publish(h.request(u, channels=["sms"])) for _ in range(PER_USER) for u in users]


def _decided_once(h: Harness, nids: list[str], what: str) -> None:
    """Every request in `nids` has its outcome, each accepted with one delivery."""
    wait_for(
        lambda: all(h.watcher.outcomes(nid) for nid in nids),
        timeout=90,
        what=lambda: f"an outcome for {what}; {h.progress()}",
    )
    lost, doubled = census(h, nids, expect=("accepted", None, None), deliveries=1)
    assert lost == [] and doubled == []


def _committed_to_the_end(h: Harness, what: str) -> None:
    wait_for(
        lambda: all(c == end for c, end in _committed(h).values()),
        timeout=30,
        what=lambda: f"{what}: {_committed(h)}",
    )


def _round(h: Harness, users: list[str]) -> int:
    """Publish a round while the processor is down, start it, check the round; how many
    skips the processor's log has reported so far."""
    nids = _publish(h, users)
    h.start()  # its consumer drops the first records it fetches of every partition
    _decided_once(h, nids, "every request")
    # Each user's deliveries in the order their requests were published.
    order = {nid: i for i, nid in enumerate(nids)}
    by_user: dict[str, list[int]] = {}
    with h.watcher.lock:
        for nid in nids:
            for _topic, d in h.watcher.deliveries.get(nid, []):
                by_user.setdefault(d["user_id"], []).append(order[nid])
    assert all(seq == sorted(seq) for seq in by_user.values())
    _committed_to_the_end(h, "the group committed to the end of every partition")
    assert h.service is not None
    log = h.service.log_path.read_text(errors="replace")
    h.stop()
    return log.count("records skipped by the consumer, reading them again")


def test_skipped_records_are_decided_in_order_and_committed(skipping: Harness) -> None:
    h = skipping
    users = _users(h)
    # A new group (no committed offset: reading starts at each partition's log start),
    # then the same group again (reading starts at its committed offsets).
    assert _round(h, users) == PARTITIONS
    assert _round(h, users) == 2 * PARTITIONS  # the log file is appended to


DELETED = 3  # records per partition deleted before the processor reads them


def test_skipped_records_deleted_by_retention_are_passed_not_waited_for(
    skipping: Harness,
) -> None:
    # The group has committed offsets; records after them are deleted (as retention would
    # while the processor is down) and the consumer then skips the first records it reads.
    # The deleted requests cannot be decided; every other one is, once, and the group
    # commits past the deleted offsets instead of stalling on them.
    h = skipping
    users = _users(h)
    _round(h, users)
    nids = _publish(h, users)
    committed = _committed(h)
    refetcher = Refetcher(KafkaSettings(bootstrap_servers=KAFKA))
    try:
        deleted = {
            codec.decode(r.value(), codec.REQUEST)["notification_id"]
            for p, (c, _end) in committed.items()
            for r in refetcher.fetch(h.topic, p, range(c, c + DELETED)).records
        }
    finally:
        refetcher.close()
    assert len(deleted) == DELETED * PARTITIONS
    admin = AdminClient({"bootstrap.servers": KAFKA})
    cuts = [TopicPartition(h.topic, p, c + DELETED) for p, (c, _end) in committed.items()]
    for fut in admin.delete_records(cuts).values():
        fut.result()

    h.start()
    kept = [nid for nid in nids if nid not in deleted]
    _decided_once(h, kept, "every request not deleted")
    assert not any(h.watcher.outcomes(nid) for nid in deleted)
    _committed_to_the_end(h, "the group committed past the deleted records")
    assert h.service is not None
    log = h.service.log_path.read_text(errors="replace")
    assert log.count("skipped records deleted before they were read again") == PARTITIONS
