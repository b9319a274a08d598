"""The commit rule under SIGKILL: an offset is committed only once every record before it in
its partition is finished, so a kill never skips a request.

The scenario that lost requests before herald owned the commit decision: a Cassandra
outage holds a backlog of requests; when Cassandra comes back they finish in an order of
their own, and the processor is SIGKILLed while some early offsets are still unfinished
and later ones are done. After a restart every request must end in exactly one outcome,
with exactly its delivery ids: none lost, none doubled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.processors.prockit import Harness, Proxy, census, make_harness
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BACKLOG = 3000
USERS = 200


@pytest.fixture
def behind_proxy() -> Iterator[tuple[Harness, Proxy]]:
    proxy = Proxy()
    try:
        for h in make_harness({"HERALD_CASSANDRA__PORT": str(proxy.port)}):
            yield h, proxy
    finally:
        proxy.close()


def _outage_then_kill(h: Harness, proxy: Proxy, users: list[str], n: int) -> list[str]:
    """Publish n requests during an outage, restore, SIGKILL mid-recovery; their ids."""
    proxy.cut()
    nids = [h.publish(h.request(users[i % len(users)], channels=["sms"])) for i in range(n)]
    time.sleep(3)  # every request is now waiting on Cassandra
    proxy.restore()
    wait_for(
        lambda: sum(1 for nid in nids if h.watcher.outcomes(nid)) >= n // 2,
        timeout=60,
        what="recovery under way",
    )
    time.sleep(1.0)  # a commit interval: what the processor commits, it has committed
    done = sum(1 for nid in nids if h.watcher.outcomes(nid))
    h.kill()
    print(f"killed with {done} of {n} finished")
    return nids


def _delivery_ids(h: Harness, nid: str) -> list[str]:
    return [d["delivery_id"] for _t, d in h.watcher.delivered(nid)]


def _assert_each_once(h: Harness, nids: list[str]) -> None:
    wait_for(
        lambda: all(h.watcher.outcomes(nid) for nid in nids),
        timeout=120,
        what="an outcome for every request",
    )
    lost, doubled = census(h, nids, expect=("accepted", None, None), deliveries=1)
    assert lost == [], f"{len(lost)} of {len(nids)} requests lost"
    assert doubled == [], (
        f"{len(doubled)} of {len(nids)} requests with more than one outcome, e.g. "
        + "; ".join(
            f"{nid}: {h.watcher.outcomes(nid)} via {_delivery_ids(h, nid)}" for nid in doubled[:3]
        )
    )


def test_sigkill_on_a_new_group_loses_no_request(behind_proxy: tuple[Harness, Proxy]) -> None:
    h, proxy = behind_proxy
    h.start()  # nothing processed yet: the group has no committed offset
    users = [h.user() for _ in range(USERS)]
    nids = _outage_then_kill(h, proxy, users, BACKLOG)
    h.start()
    _assert_each_once(h, nids)


def test_sigkill_on_an_existing_group_loses_no_request(
    behind_proxy: tuple[Harness, Proxy],
) -> None:
    h, proxy = behind_proxy
    h.start()
    users = [h.user() for _ in range(USERS)]
    warm = [h.publish(h.request(u, channels=["sms"])) for u in users]
    wait_for(lambda: all(h.watcher.outcomes(n) for n in warm), timeout=60, what="warm-up")
    time.sleep(2)  # committed offsets exist in every partition
    nids = _outage_then_kill(h, proxy, users, BACKLOG)
    h.start()
    _assert_each_once(h, warm + nids)


def test_three_sigkills_during_outages_on_a_fresh_group(
    behind_proxy: tuple[Harness, Proxy],
) -> None:
    h, proxy = behind_proxy
    h.start()
    users = [h.user() for _ in range(USERS)]
    nids: list[str] = []
    for _ in range(3):
        nids += _outage_then_kill(h, proxy, users, BACKLOG // 3)
        h.start()
    _assert_each_once(h, nids)
    print(f"\nthree kills during outages: {len(nids)} requests, 0 lost, 0 doubled")
