"""Confluent wire format through a schema registry client (a fake one here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import codec, ids


@dataclass
class _Schema:
    schema_str: str
    schema_type: str = "AVRO"


class FakeRegistry:
    """Just the two calls the codec makes, with the registry's id semantics."""

    def __init__(self) -> None:
        self.by_id: dict[int, _Schema] = {}
        self.subjects: dict[tuple[str, str], int] = {}
        self.calls = 0

    def register_schema(self, subject: str, schema: Any) -> int:
        self.calls += 1
        canonical = json.dumps(json.loads(schema.schema_str), sort_keys=True)
        for sid, known in self.by_id.items():
            if json.dumps(json.loads(known.schema_str), sort_keys=True) == canonical:
                self.subjects[(subject, canonical)] = sid
                return sid
        sid = 100 + len(self.by_id)
        self.by_id[sid] = _Schema(schema.schema_str)
        self.subjects[(subject, canonical)] = sid
        return sid

    def get_schema(self, schema_id: int) -> _Schema:
        return self.by_id[schema_id]


def _request() -> dict[str, Any]:
    return {
        "event_id": "evt-9",
        "notification_id": ids.notification_id("evt-9"),
        "source": "billing",
        "user_id": "u-9",
        "category": "transactional",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }


def test_wire_format_is_magic_zero_and_big_endian_schema_id() -> None:
    fake = FakeRegistry()
    rc = codec.RegistryCodec(fake)
    data = rc.encode(codec.REQUEST, _request(), topic="notifications.requested")
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert schema_id in fake.by_id
    registered = json.loads(fake.by_id[schema_id].schema_str)
    assert registered["name"] == "NotificationRequest" and registered["doc"]
    assert (
        "notifications.requested-value",
        json.dumps(registered, sort_keys=True),
    ) in fake.subjects


def test_round_trip_and_ids_are_cached() -> None:
    fake = FakeRegistry()
    rc = codec.RegistryCodec(fake)
    for _ in range(3):
        data = rc.encode(codec.REQUEST, _request(), topic="notifications.requested")
    assert fake.calls == 1
    out = rc.decode(data, expect=codec.REQUEST)
    assert out["event_id"] == "evt-9" and out["priority"] == "normal"


def test_a_fresh_reader_resolves_the_writer_schema_by_id() -> None:
    fake = FakeRegistry()
    data = codec.RegistryCodec(fake).encode(
        codec.USER_CHANGE,
        {"user_id": "u", "kind": "device", "changed_at": datetime(2026, 1, 1, tzinfo=UTC)},
        topic="users.changes",
    )
    out = codec.RegistryCodec(fake).decode(data, expect=codec.USER_CHANGE)
    assert out["kind"] == "device"


def test_registry_codec_also_reads_single_object_encoding() -> None:
    data = codec.encode(codec.REQUEST, _request())
    assert codec.RegistryCodec(FakeRegistry()).decode(data)["user_id"] == "u-9"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad_magic"),
        (b"\x07abc", "bad_magic"),
        (b"\x00\x00\x00\x00\x09body", "unknown_schema_id"),
    ],
)
def test_undecodable(data: bytes, reason: str) -> None:
    with pytest.raises(codec.DecodeError) as err:
        codec.RegistryCodec(FakeRegistry()).decode(data)
    assert err.value.reason == reason


def test_wrong_schema_is_rejected() -> None:
    rc = codec.RegistryCodec(FakeRegistry())
    data = rc.encode(codec.REQUEST, _request(), topic="t")
    with pytest.raises(codec.DecodeError) as err:
        rc.decode(data, expect=codec.STATUS)
    assert err.value.reason == "wrong_schema"


def test_codec_for_defaults_to_single_object() -> None:
    assert isinstance(codec.codec_for(None), codec.SingleObjectCodec)
    data = codec.codec_for(None).encode(codec.REQUEST, _request(), topic="t")
    assert data[:2] == codec.MAGIC
    assert isinstance(codec.codec_for("http://registry.invalid:8081"), codec.RegistryCodec)


def test_plain_decode_says_when_bytes_need_the_registry() -> None:
    data = codec.RegistryCodec(FakeRegistry()).encode(codec.REQUEST, _request(), topic="t")
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(data)
    assert err.value.reason == "registry_encoded"
