"""Digests in a real processor: requests naming a digest wait in the `digests` table, the
window's close sends one notification listing them, and an urgent request never waits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.processors.digestkit import digests_of, social, templates
from tests.integration.processors.prockit import Harness, make_harness, wait_for

pytestmark = pytest.mark.integration

WINDOW_S = 3


@pytest.fixture(scope="module")
def dproc() -> Iterator[Harness]:
    for harness in make_harness({"HERALD_DIGEST_TICK_S": "0.3", "HERALD_RATE_CAPS": "{}"}):
        harness.start()
        yield harness


def test_the_window_close_sends_one_digest_of_every_item(dproc: Harness) -> None:
    h = dproc
    names = templates(h)
    uid = h.user()
    nids = [h.publish(social(h, uid, f"n{i}", names, WINDOW_S)) for i in range(4)]
    for nid in nids:
        wait_for(
            lambda nid=nid: ("digested", "social", None) in h.watcher.outcomes(nid),
            what="each request digested",
        )
        assert h.watcher.delivered(nid) == []  # waiting, not sent on its own
    sent = wait_for(lambda: digests_of(h, uid), timeout=30, what="the digest in the feed")
    assert list(sent.values()) == [["n0", "n1", "n2", "n3"]]
    [digest_nid] = sent
    # The feed (Cassandra) and the status topic are read apart: the feed may show the
    # digest before the watcher has read its status.
    wait_for(
        lambda: ("accepted", None, None) in h.watcher.outcomes(digest_nid),
        what="the digest accepted",
    )


def test_a_mandatory_or_high_priority_request_is_sent_at_once(dproc: Harness) -> None:
    h = dproc
    names = templates(h)
    uid = h.user()
    urgent = [
        h.publish(social(h, uid, "sec", names, 3600, category="security")),
        h.publish(social(h, uid, "high", names, 3600, priority="high")),
    ]
    for nid in urgent:
        wait_for(lambda nid=nid: h.watcher.delivered(nid), what="an urgent request sent")
        assert not any(o[0] == "digested" for o in h.watcher.outcomes(nid))
    bodies = sorted(d["body"] for nid in urgent for _t, d in h.watcher.delivered(nid))
    assert bodies == ["high liked your post", "sec liked your post"]


def test_a_template_that_declares_a_digest_collects_its_requests(dproc: Harness) -> None:
    h = dproc
    item, digest = templates(h)
    h.session.execute(
        "UPDATE templates SET digest_key = 'likes', digest_window_s = %s, digest_template = %s"
        " WHERE template_id = %s AND locale = 'en' AND channel = 'inapp'",
        (WINDOW_S, digest, item),
    )
    uid = h.user()
    plain = {"category": "social", "channels": ["inapp"], "template_id": item, "content": {}}
    nids = [h.publish(h.request(uid, params={"n": f"t{i}"}, **plain)) for i in range(3)]
    for nid in nids:
        wait_for(
            lambda nid=nid: ("digested", "likes", None) in h.watcher.outcomes(nid),
            what="each request digested by the template's declaration",
        )
    sent = wait_for(lambda: digests_of(h, uid), timeout=30, what="the digest in the feed")
    assert list(sent.values()) == [["t0", "t1", "t2"]]
