"""Digests under SIGKILL: a processor killed while requests are being collected loses no
item and puts none in two digests. The digest table is rebuilt from its changelog; a
batch not yet acknowledged is decided again and its items are recognised by event id;
a window emitted again after the kill has the same event id and is dropped as a duplicate.

Oracle per user: the items of every digest delivered to the feed, taken together, are
exactly the items published, each once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from schemas import codec
from tests.integration.processors.digestkit import digests_of, social, templates
from tests.integration.processors.prockit import Harness, make_harness, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

USERS = 100
ITEMS = 20
WINDOW_S = 15


@pytest.fixture
def killable() -> Iterator[Harness]:
    # Small batches: the kill lands while batches are in flight, not after the last one.
    yield from make_harness(
        {
            "HERALD_DIGEST_TICK_S": "0.3",
            "HERALD_RATE_CAPS": "{}",
            "HERALD_BATCH_SIZE": "50",
            "HERALD_DIGEST_MAX_ITEMS": "50",
            # A stuck batch or digest round names where it waits in the processor's log.
            "HERALD_STALL_REPORT_S": "15",
        }
    )


def test_sigkill_while_collecting_loses_no_item_and_doubles_none(killable: Harness) -> None:
    h = killable
    names = templates(h)
    users = [h.user() for _ in range(USERS)]
    run = int(time.time())
    reqs = [
        social(h, users[u], f"{u}-{i}", names, WINDOW_S, event_id=f"dg-{run}-{u}-{i}")
        for i in range(ITEMS)
        for u in range(USERS)
    ]
    for r in reqs:
        h.producer.produce(h.topic, codec.encode(codec.REQUEST, r), r["user_id"].encode())
    h.producer.flush(30)

    def digested() -> int:
        with h.watcher.lock:
            return sum(
                1
                for r in reqs
                if any(
                    e["outcome"] == "digested"
                    for e in h.watcher.statuses.get(r["notification_id"], [])
                )
            )

    h.start()
    wait_for(lambda: digested() >= len(reqs) // 4, timeout=60, what="a quarter collected")
    h.kill()
    assert digested() < len(reqs), "every request was collected before the kill"
    h.start()

    def complete() -> bool:
        return all(
            sum(len(items) for items in digests_of(h, uid).values()) >= ITEMS for uid in users
        )

    def shortfall() -> str:
        # What a timeout saw: which requests never got their `digested` status, and which
        # users' digests lack items, so a failure says where the items stopped.
        short = {
            uid: ITEMS - sum(len(items) for items in digests_of(h, uid).values()) for uid in users
        }
        short = {uid: n for uid, n in short.items() if n > 0}
        return (
            f"every item in a delivered digest: {digested()} of {len(reqs)} requests"
            f" digested; {len(short)} users short of items, e.g. {dict(list(short.items())[:5])};"
            f" {h.progress()}"
        )

    wait_for(complete, timeout=180, what=shortfall)
    time.sleep(WINDOW_S / 2)  # a digest sent twice would show up by now
    for u, uid in enumerate(users):
        carried = Counter(n for items in digests_of(h, uid).values() for n in items)
        assert carried == Counter(f"{u}-{i}" for i in range(ITEMS)), (uid, carried)
