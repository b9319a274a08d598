"""Digests across a rebalance: a second worker joins while windows are open, takes half
the partitions and restores their entries from the changelog; every user still gets the
items published, each in exactly one digest, and no window is sent by both workers."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald.services import ServiceSpec, free_port, python_module, start
from schemas import codec
from tests.integration.processors.digestkit import digests_of, social, templates
from tests.integration.processors.prockit import LOG_DIR, Harness, make_harness, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

USERS = 30
ITEMS = 4
WINDOW_S = 20


@pytest.fixture
def pair() -> Iterator[Harness]:
    yield from make_harness({"HERALD_DIGEST_TICK_S": "0.3", "HERALD_RATE_CAPS": "{}"})


def test_a_worker_joining_mid_window_sends_each_digest_once(pair: Harness) -> None:
    h = pair
    names = templates(h)
    users = [h.user() for _ in range(USERS)]
    run = int(time.time())
    reqs = [
        social(h, users[u], f"{u}-{i}", names, WINDOW_S, event_id=f"rb-{run}-{u}-{i}")
        for i in range(ITEMS)
        for u in range(USERS)
    ]
    h.start()
    first_half, second_half = reqs[: len(reqs) // 2], reqs[len(reqs) // 2 :]
    for r in first_half:
        h.producer.produce(h.topic, codec.encode(codec.REQUEST, r), r["user_id"].encode())
    h.producer.flush(30)

    def digested(batch: list[dict[str, object]]) -> bool:
        return all(
            ("digested", "social", None) in h.watcher.outcomes(str(r["notification_id"]))
            for r in batch
        )

    wait_for(lambda: digested(first_half), timeout=60, what="the first half collected")
    metrics = free_port()
    env = {
        **h.env,
        "HERALD_METRICS_PORT": str(metrics),
        "HERALD_DATADIR": str(Path(h.env["HERALD_DATADIR"]) / "second"),
    }
    second = start(
        ServiceSpec(f"processor-2-{h.topic}", python_module("processors"), metrics, env),
        LOG_DIR,
        timeout=60,
    )
    try:
        for r in second_half:
            h.producer.produce(h.topic, codec.encode(codec.REQUEST, r), r["user_id"].encode())
        h.producer.flush(30)
        wait_for(lambda: digested(second_half), timeout=60, what="the second half collected")

        def complete() -> bool:
            return all(
                sum(len(items) for items in digests_of(h, uid).values()) >= ITEMS for uid in users
            )

        wait_for(complete, timeout=120, what="every item in a delivered digest")
        time.sleep(3)  # a window sent by both workers would show up by now
        for u, uid in enumerate(users):
            carried = Counter(n for items in digests_of(h, uid).values() for n in items)
            assert carried == Counter(f"{u}-{i}" for i in range(ITEMS)), (uid, carried)
    finally:
        second.stop()
