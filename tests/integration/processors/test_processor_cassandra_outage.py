"""Fail closed: while Cassandra cannot answer, the processor sends nothing; when it is back,
the waiting requests go out, each once.

The processor reaches Cassandra through a TCP proxy owned by the test, which cuts every
connection and refuses new ones for a while: a Cassandra outage, without touching the
shared Cassandra.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.processors.prockit import Harness, Proxy, make_harness
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def behind_proxy() -> Iterator[tuple[Harness, Proxy]]:
    proxy = Proxy()
    try:
        for h in make_harness({"HERALD_CASSANDRA__PORT": str(proxy.port)}):
            h.start()
            yield h, proxy
    finally:
        proxy.close()


def test_nothing_is_sent_while_cassandra_is_down(behind_proxy: tuple[Harness, Proxy]) -> None:
    h, proxy = behind_proxy
    accepted = ("accepted", None, None)
    warm = h.user()
    first = h.publish(h.request(warm, channels=["sms"]))
    wait_for(lambda: accepted in h.watcher.outcomes(first), what="accepted before the outage")

    proxy.cut()
    opted_out = h.user(opt_outs=(("sms", "*"),))  # written directly, not through the proxy
    during = [
        h.publish(h.request(opted_out, channels=["sms"], category="social")),
        h.publish(h.request(warm, channels=["sms"])),  # cached user: dedup still needs Cassandra
    ]
    quiet_until = time.monotonic() + 4
    while time.monotonic() < quiet_until:  # nothing at all may come out during the outage
        assert all(h.watcher.outcomes(n) == [] for n in during)
        assert all(h.watcher.delivered(n) == [] for n in during)
        time.sleep(0.1)

    proxy.restore()
    wait_for(
        lambda: h.watcher.outcomes(during[0]) == [("dropped", "opted_out", "sms")],
        timeout=60,
        what="the opt-out honoured after the outage",
    )
    wait_for(lambda: accepted in h.watcher.outcomes(during[1]), timeout=60)
    assert h.watcher.delivered(during[0]) == []
    wait_for(lambda: len(h.watcher.delivered(during[1])) == 1, what="one delivery")
