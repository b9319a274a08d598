"""The processing guarantee under SIGKILL: every request fans out exactly once by id.

The processor is at-least-once: a request whose offset was not committed when the
process died is processed again and its records are produced again. Because every id is
derived from the event id, a repeat carries the same delivery ids as the first pass, so
the senders' delivery ledger (claimed per delivery id before any provider call) sends it
once. The oracle is therefore on ids: for every request the set of delivery ids written
equals the expected set, none missing, none foreign, and any repeated record is
identical in id.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from schemas import codec, ids
from tests.integration.processors.prockit import Harness, make_harness
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REQUESTS = 2000
USERS = 200


@pytest.fixture
def killable() -> Iterator[Harness]:
    yield from make_harness()


def test_sigkill_mid_stream_every_request_fans_out_exactly_once(killable: Harness) -> None:
    h = killable
    users = [h.user(devices=((f"phone-{i}", "ios"),)) for i in range(USERS)]
    reqs = [
        h.request(users[i % USERS], channels=["push", "email"], event_id=f"kill-{i}-{time.time()}")
        for i in range(REQUESTS)
    ]
    for r in reqs:
        h.producer.produce(h.topic, codec.encode(codec.REQUEST, r), r["user_id"].encode())
    h.producer.flush(30)
    expected = {
        r["notification_id"]: {
            ids.delivery_id(r["notification_id"], "push.ios", f"phone-{i % USERS}"),
            ids.delivery_id(r["notification_id"], "email", "email"),
        }
        for i, r in enumerate(reqs)
    }

    def accepted() -> int:
        with h.watcher.lock:
            return sum(
                1
                for nid in expected
                if any(e["outcome"] == "accepted" for e in h.watcher.statuses.get(nid, []))
            )

    h.start()
    wait_for(lambda: accepted() >= REQUESTS // 4, timeout=60, what="a quarter processed")
    h.kill()
    at_kill = accepted()
    assert at_kill < REQUESTS, "the processor finished before it could be killed"
    h.start()
    wait_for(lambda: accepted() == REQUESTS, timeout=180, what="every request accepted")

    def fanned_out() -> bool:
        with h.watcher.lock:
            seen = {d["delivery_id"] for recs in h.watcher.deliveries.values() for _t, d in recs}
        return all(want <= seen for want in expected.values())

    # The channel topics are shared and busy: give the watcher time to read them.
    wait_for(fanned_out, timeout=60, what="every expected delivery read back")

    with h.watcher.lock:
        records = {nid: list(h.watcher.deliveries.get(nid, [])) for nid in expected}
        outcomes = {
            nid: {(e["outcome"], e["reason"]) for e in h.watcher.statuses.get(nid, [])}
            for nid in expected
        }
    missing = [
        nid
        for nid, want in expected.items()
        if {d["delivery_id"] for _t, d in records[nid]} != want
    ]
    assert missing == [], f"{len(missing)} requests without exactly their delivery ids"
    # Every request has one outcome: accepted (a redelivered record is not its own duplicate).
    assert {nid for nid, o in outcomes.items() if o != {("accepted", None)}} == set()
    repeats = Counter(d["delivery_id"] for recs in records.values() for _t, d in recs)
    doubled = sum(n - 1 for n in repeats.values())
    print(
        f"\nkill test: {REQUESTS} requests, {len(repeats)} delivery ids, killed after "
        f"{at_kill} accepted; {doubled} records produced again with the same ids "
        "(absorbed by the senders' delivery ledger)"
    )
