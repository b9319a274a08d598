"""With `schema_registry_url` set, every service encodes and decodes through the registry
codec: the processor, the senders, `herald replay`, `herald dlq`, `herald stats` and the
tracking server. Kafka is replaced by in-memory stand-ins; the registry is confluent-kafka's
in-process mock."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from herald.ops import dlq, replay, slices, stats
from herald.ops.common import topic_ref
from herald.ops.settings import OpsSettings, TrackingServerSection
from herald.ops.tracking import create_app
from infra.settings import KafkaSettings
from processors.pipeline import Incoming, Processor
from processors.settings import ProcessorSettings
from schemas import codec, ids
from schemas.channels import Channel
from schemas.events import now_ms, status_event
from senders.handler import DeliveryHandler
from senders.runtime import SenderRuntime
from senders.settings import SenderSettings
from tests.unit.processors.test_processor_pipeline import (
    FakeDedup,
    FakeEnricher,
    FakeProducer,
    FakeScheduler,
    src,
    user,
)
from tests.unit.senders.fakes import FakeProvider, MemoryLedger, MemoryPublisher, delivery


@pytest.fixture
def kafka() -> KafkaSettings:
    return KafkaSettings(schema_registry_url=f"mock://wiring-{uuid.uuid4().hex}")


def values(kafka: KafkaSettings) -> codec.Codec:
    return codec.codec_for(kafka.schema_registry_url)


def registry_encoded(kafka: KafkaSettings, data: bytes, expect: str) -> dict[str, Any]:
    assert data[:1] == codec.CONFLUENT_MAGIC, "written single-object, not through the registry"
    return values(kafka).decode(data, expect)


def _request(event_id: str = "e1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "notification_id": ids.notification_id(event_id),
        "source": "unit",
        "user_id": "u1",
        "category": "transactional",
        "channels": ["sms"],
        "content": {"sms": {"body": "hello"}},
        "created_at": now_ms(),
    }


async def test_processor_reads_and_writes_through_the_registry(kafka: KafkaSettings) -> None:
    producer = FakeProducer()
    proc = Processor(
        ProcessorSettings(kafka=kafka),
        producer=producer,  # type: ignore[arg-type]
        enricher=FakeEnricher({"u1": user()}, {}),  # type: ignore[arg-type]
        dedup=FakeDedup(),  # type: ignore[arg-type]
        scheduler=FakeScheduler(),  # type: ignore[arg-type]
    )
    raw = values(kafka).encode(codec.REQUEST, _request(), topic="notifications.requested")
    await proc.handle_batch([Incoming(raw, src(0))], {})
    out = {topic: value for topic, _k, value, _h in producer.records}
    assert set(out) == {"notifications.sms", "notifications.status"}
    assert registry_encoded(kafka, out["notifications.sms"], codec.DELIVERY)["body"] == "hello"
    assert registry_encoded(kafka, out["notifications.status"], codec.STATUS)["outcome"] == (
        "accepted"
    )


async def test_senders_read_and_write_through_the_registry(kafka: KafkaSettings) -> None:
    settings = SenderSettings(kafka=kafka, metrics_enabled=False)
    published = MemoryPublisher()
    handler = DeliveryHandler(
        settings=settings,
        ledger=MemoryLedger(),
        publisher=published,
        providers={"twilio": FakeProvider("twilio", ["sms"])},
        owner="me",
    )
    await handler.handle(delivery(), "notifications.sms", partition=0)
    [status] = published.records
    assert registry_encoded(kafka, status.value, codec.STATUS)["outcome"] == "sent"
    runtime = SenderRuntime(settings, [Channel.SMS], handler=handler, publisher=published)
    assert all(lane.codec is values(kafka) for lane in runtime.lanes)


class FakeMessage:
    def __init__(self, value: bytes, offset: int = 0) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"u1"

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, now_ms())


class _Consumer:
    def close(self) -> None:
        pass


@pytest.fixture
def topic_holds(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[bytes]], None]:
    """Every topic the ops tools read holds these values."""

    def hold(data: list[bytes]) -> None:
        def read(*_a: Any, **_k: Any) -> Iterator[list[FakeMessage]]:
            yield [FakeMessage(v, i) for i, v in enumerate(data)]

        range_ = [slices.PartitionRange(0, 0, len(data))]
        monkeypatch.setattr(slices, "ops_consumer", lambda *_a, **_k: _Consumer())
        monkeypatch.setattr(slices, "resolve_window", lambda *_a, **_k: range_)
        monkeypatch.setattr(slices, "whole_topic", lambda *_a, **_k: range_)
        monkeypatch.setattr(slices, "read_ranges", read)

    return hold


def test_replay_decodes_registry_requests(
    kafka: KafkaSettings, topic_holds: Callable[[list[bytes]], None]
) -> None:
    topic_holds(
        [values(kafka).encode(codec.REQUEST, _request(f"e{i}"), topic="t") for i in range(3)]
    )
    req = replay.ReplayRequest(topic_ref("requests"), 0, now_ms(), dry_run=True)
    outcome = replay.replay(kafka, None, req)
    assert not outcome.skipped
    assert outcome.total_produced == 3


def test_dlq_reads_and_redrives_registry_deliveries(
    kafka: KafkaSettings, topic_holds: Callable[[list[bytes]], None]
) -> None:
    ref = topic_ref("sms", dlq=True)
    topic_holds([values(kafka).encode(codec.DELIVERY, delivery(attempt=4), topic=ref.name)])
    [letter] = dlq.read(kafka, ref)
    assert letter.decode_error is None and letter.delivery_id == "d-1"
    fresh = dlq._fresh_value(ref, letter, values(kafka), ref.main)
    assert registry_encoded(kafka, fresh, codec.DELIVERY)["attempt"] == 1


def test_stats_decode_registry_status_events(
    kafka: KafkaSettings, topic_holds: Callable[[list[bytes]], None]
) -> None:
    event = status_event(
        notification_id="n", event_id="e", user_id="u", category="c", outcome="sent"
    )
    topic_holds([values(kafka).encode(codec.STATUS, event, topic="notifications.status")])
    assert [e["status_id"] for e in stats.read_status(kafka, 0, now_ms())] == [event["status_id"]]


class _Producer:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce(
        self, _topic: str, value: bytes, _key: bytes, on_delivery: Any, headers: Any = None
    ) -> None:
        self.values.append(value)
        on_delivery(None, None)

    def poll(self, timeout: float) -> None:
        time.sleep(timeout)

    def flush(self, _timeout: float) -> int:
        return 0


def test_tracking_writes_through_the_registry(kafka: KafkaSettings) -> None:
    settings = OpsSettings(
        kafka=kafka, tracking_server=TrackingServerSection(app_keys=[SecretStr("k1")])
    )
    producer = _Producer()
    with TestClient(create_app(settings, producer)) as client:  # type: ignore[arg-type]
        got = client.post(
            "/v1/push/events",
            headers={"X-Herald-App-Key": "k1"},
            json={"event": "delivered", "delivery_id": "d", "notification_id": "n"},
        )
    assert got.status_code == 202
    [value] = producer.values
    assert registry_encoded(kafka, value, codec.STATUS)["outcome"] == "delivered"
