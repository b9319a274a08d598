import json
import uuid
from datetime import UTC, datetime

import pytest

from schemas import codec, events, ids


def _request(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "evt-1",
        "notification_id": ids.notification_id("evt-1"),
        "source": "billing",
        "user_id": "u-1",
        "category": "transactional",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    base.update(over)
    return base


def test_round_trip_fills_defaults() -> None:
    out = codec.decode(codec.encode(codec.REQUEST, _request()), expect=codec.REQUEST)
    assert out["user_id"] == "u-1"
    assert out["priority"] == "normal"
    assert out["channels"] == []
    assert out["created_at"] == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad_magic"),
        (b'{"json": true}', "bad_magic"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown_fingerprint"),
    ],
)
def test_undecodable_bytes_raise_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(data)
    assert err.value.reason == reason


def test_truncated_body_is_corrupt() -> None:
    data = codec.encode(codec.REQUEST, _request())
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(data[:15])
    assert err.value.reason == "corrupt_body"


def test_wrong_schema_is_rejected() -> None:
    status = events.status_event(
        notification_id="n", event_id="e", user_id="u", category="c", outcome="sent"
    )
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(codec.encode(codec.STATUS, status), expect=codec.REQUEST)
    assert err.value.reason == "wrong_schema"


def test_every_shipped_schema_parses_and_has_a_doc() -> None:
    reg = codec.registry()
    assert {codec.REQUEST, codec.DELIVERY, codec.STATUS, codec.USER_CHANGE} <= set(reg.by_name)
    for versions in reg.by_name.values():
        for sv in versions:
            assert json.loads(json.dumps(sv.parsed))["doc"]


def test_ids_are_deterministic_and_distinct() -> None:
    n = ids.notification_id("evt-1")
    assert n == ids.notification_id("evt-1") != ids.notification_id("evt-2")
    assert ids.delivery_id(n, "push.ios", "dev-1") != ids.delivery_id(n, "push.ios", "dev-2")
    a = events.status_event(
        notification_id=n,
        event_id="evt-1",
        user_id="u",
        category="c",
        outcome="dropped",
        reason="opted_out",
        channel="sms",
    )
    b = events.status_event(
        notification_id=n,
        event_id="evt-1",
        user_id="u",
        category="c",
        outcome="dropped",
        reason="opted_out",
        channel="sms",
    )
    assert a["status_id"] == b["status_id"]


def test_notification_id_is_the_documented_uuid5() -> None:
    # docs/contract.md gives outside producers this namespace and example.
    ns = uuid.UUID("6f1c1d0e-7c57-4b8e-9a55-2f6a8e3b9d10")
    assert ids.notification_id("evt-1") == str(uuid.uuid5(ns, "notification:evt-1"))
    assert ids.notification_id("evt-1") == "5e1fd203-b225-5b6d-9198-cb6b283df9f8"
