"""The oracle's judgement on hand-made observations: it must catch a loss and a double."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from herald.bench.oracle import Oracle, Seen
from schemas import codec, ids
from schemas.events import status_event


class FakeOracle(Oracle):
    """The judging half of the oracle, without Kafka."""

    def __init__(self) -> None:  # no consumer, no thread
        self.seen = Seen()
        self.values = codec.codec_for(None)
        self.topic_prefix = ""
        self.session = None
        self.instance_prefix = None
        self._owners: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._expected: dict[str, dict[str, Any]] = {}
        self._expected_rejects: set[bytes] = set()


def request(event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "notification_id": ids.notification_id(event_id)}


def fan_out(o: FakeOracle, nid: str, target: str) -> str:
    did = ids.delivery_id(nid, "email", target)
    o._on_record(
        "notifications.email",
        b"user",
        _encode_delivery(did, nid),
        {},
    )
    return did


def _encode_delivery(did: str, nid: str) -> bytes:
    return codec.encode(
        codec.DELIVERY,
        {
            "delivery_id": did,
            "notification_id": nid,
            "event_id": "e",
            "user_id": "user",
            "channel": "email",
            "category": "transactional",
            "address": "a@example.com",
            "body": "hi",
            "requested_at": 1,
            "created_at": 1,
        },
    )


def status(
    o: FakeOracle, nid: str, outcome: str, did: str | None = None, reason: str | None = None
) -> None:
    ev = status_event(
        notification_id=nid,
        event_id="e",
        user_id="user",
        category="transactional",
        outcome=outcome,
        reason=reason,
        delivery_id=did,
        channel="email",
    )
    o._on_record("notifications.status", nid.encode(), codec.encode(codec.STATUS, ev), {})


def test_delivered_once_dropped_with_reason_is_clean() -> None:
    o = FakeOracle()
    a, b = request("a"), request("b")
    o.expect([a, b])
    did = fan_out(o, a["notification_id"], "email")
    status(o, a["notification_id"], "sent", did)
    status(o, b["notification_id"], "dropped", reason="opted_out")
    v = o._judge(Counter({did: 1}), final=True)
    assert not v.problems, v.summary()
    assert v.counts["delivered"] == 1 and v.counts["dropped"] == 1


def test_double_receipt_is_a_problem() -> None:
    o = FakeOracle()
    a = request("a")
    o.expect([a])
    did = fan_out(o, a["notification_id"], "email")
    status(o, a["notification_id"], "sent", did)
    v = o._judge(Counter({did: 2}), final=True)
    assert any(p.startswith("doubled") for p in v.problems)


def test_missing_request_and_pending_delivery_are_losses() -> None:
    o = FakeOracle()
    a, b = request("a"), request("b")
    o.expect([a, b])
    fan_out(o, a["notification_id"], "email")  # fanned out, never ended
    v = o._judge(Counter(), final=True)
    assert sum(p.startswith("lost") for p in v.problems) == 2


def test_drop_without_reason_and_sent_without_receipt_are_problems() -> None:
    o = FakeOracle()
    a, b = request("a"), request("b")
    o.expect([a, b])
    status(o, a["notification_id"], "dropped")
    did = fan_out(o, b["notification_id"], "email")
    status(o, b["notification_id"], "sent", did)
    v = o._judge(Counter(), final=True)
    assert any("without a reason" in p for p in v.problems)
    assert any("not in the ledger" in p for p in v.problems)


def test_rejected_bytes_must_be_dead_lettered_once_with_a_reason() -> None:
    o = FakeOracle()
    o.expect_rejected(b"k1")
    o.expect_rejected(b"k2")
    o._on_record("notifications.requested.dlq", b"k1", b"junk", {"herald.reason": "bad_magic"})
    v = o._judge(Counter(), final=True)
    assert v.rejected == {b"k1": ["bad_magic"]}
    assert any("k2" in p for p in v.problems)
