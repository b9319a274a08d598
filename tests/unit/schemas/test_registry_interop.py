"""herald's registry codec against confluent-kafka's own Avro serializer and deserializer,
sharing confluent-kafka's in-process mock schema registry (`mock://`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import codec, events, ids

TOPIC = "notifications.requested"


@pytest.fixture
def herald() -> codec.RegistryCodec:
    # A scope of its own: the mock registry keeps schemas per client, codec_for per URL.
    values = codec.codec_for(f"mock://interop-{uuid.uuid4().hex}")
    assert isinstance(values, codec.RegistryCodec)
    return values


def _ctx(topic: str = TOPIC) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def _request() -> dict[str, Any]:
    return {
        "event_id": "evt-interop",
        "notification_id": ids.notification_id("evt-interop"),
        "source": "billing",
        "user_id": "u-42",
        "category": "transactional",
        "priority": "high",
        "channels": ["email"],
        "template_id": "receipt",
        "params": {"amount": "12.50"},
        "content": {},
        "locale": "de-DE",
        "send_at": None,
        "expires_at": datetime(2026, 1, 2, tzinfo=UTC),
        "collapse_key": None,
        "trace_id": "t-1",
        "metadata": {},
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }


def _status() -> dict[str, Any]:
    return events.status_event(
        notification_id="n-1",
        event_id="e-1",
        user_id="u-1",
        category="marketing",
        outcome="dropped",
        reason="opted_out",
        channel="sms",
    )


CASES = [(codec.REQUEST, TOPIC, _request), (codec.STATUS, "notifications.status", _status)]


@pytest.mark.parametrize(("fullname", "topic", "make"), CASES)
def test_confluent_reads_what_herald_wrote(
    herald: codec.RegistryCodec, fullname: str, topic: str, make: Any
) -> None:
    record = make()
    data = herald.encode(fullname, record, topic=topic)
    assert data[0] == 0
    out = AvroDeserializer(herald.client)(data, _ctx(topic))
    assert out == herald.decode(data, expect=fullname)
    assert {k: out[k] for k in record} == _normalised(record)


@pytest.mark.parametrize(("fullname", "topic", "make"), CASES)
def test_herald_reads_what_confluent_wrote(
    herald: codec.RegistryCodec, fullname: str, topic: str, make: Any
) -> None:
    record = make()
    source = codec.registry().latest(fullname).source
    data = AvroSerializer(herald.client, source)(record, _ctx(topic))
    assert data is not None and data[0] == 0
    out = herald.decode(data, expect=fullname)
    assert {k: out[k] for k in record} == _normalised(record)


def test_codec_for_is_one_codec_per_url() -> None:
    assert codec.codec_for("mock://same") is codec.codec_for("mock://same")
    assert isinstance(codec.codec_for(None), codec.SingleObjectCodec)


def _normalised(record: dict[str, Any]) -> dict[str, Any]:
    """Timestamps come back as aware datetimes, whatever they went in as."""
    out = dict(record)
    for k, v in record.items():
        if isinstance(v, int) and k.endswith("_at"):
            out[k] = datetime.fromtimestamp(v / 1000, UTC)
    return out
