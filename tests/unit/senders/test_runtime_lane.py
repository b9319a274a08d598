"""A lane's handling of records it cannot process, without a broker: they end up on the
DLQ with a reason and never stall their partition; an outage is waited out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from cassandra.cluster import NoHostAvailable
from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from infra.settings import KafkaSettings
from schemas import codec
from schemas.channels import Channel
from senders.consumer import lanes_for
from senders.outputs import Stopping
from senders.runtime import Lane
from senders.settings import SenderSettings
from senders.slots import Slots
from tests.unit.senders.fakes import MemoryPublisher, delivery

DLQ = "notifications.sms.dlq"


class SizeLimitedPublisher(MemoryPublisher):
    """Refuses a record over `limit` bytes (key, value and headers) as Kafka does."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.refused = 0

    async def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers or ())
        if size > self.limit:
            self.refused += 1
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        await super().produce(topic, value, key=key, headers=headers)


class ScriptedHandler:
    """Raises the scripted exceptions in turn, then succeeds."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.stopping = asyncio.Event()

    async def handle(
        self, d: dict[str, Any], consumed_from: str, *, partition: int, redriven: bool
    ) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "sent"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    real = asyncio.sleep

    async def instant(_: float, result: Any = None) -> Any:
        return await real(0, result)

    monkeypatch.setattr(asyncio, "sleep", instant)


@pytest.fixture
async def make_lane() -> AsyncIterator[Any]:
    lanes: list[Lane] = []

    def make(handler: Any, publisher: MemoryPublisher) -> Lane:
        settings = SenderSettings(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), metrics_enabled=False
        )
        spec = lanes_for(Channel.SMS, settings.max_in_flight)[0]
        lane = Lane(
            spec,
            settings=settings,
            handler=handler,
            publisher=publisher,
            slots=Slots(settings.max_in_flight),
            stopping=handler.stopping,
        )
        lanes.append(lane)
        return lane

    yield make
    for lane in lanes:
        lane._consumer.close()
        lane._executor.shutdown(wait=False)


def record(value: bytes, key: bytes = b"u-1", topic: str = "notifications.sms") -> KafkaMessage:
    return KafkaMessage(topic=topic, partition=0, offset=7, key=key, value=value)


async def test_a_dead_letter_too_large_for_kafka_goes_truncated_with_the_reason(
    make_lane: Any,
) -> None:
    out = SizeLimitedPublisher(limit=100_000)
    lane = make_lane(ScriptedHandler(), out)
    value = b"not avro " + b"x" * 99_900  # fits as it came, not with the dead-letter headers

    async with asyncio.timeout(5):
        assert await lane._poison(record(value), "undecodable:bad_magic")

    [letter] = out.on(DLQ)
    assert out.refused >= 1
    assert value.startswith(letter.value) and len(letter.value) < len(value)
    assert letter.key == b"u-1"
    assert letter.headers["herald.reason"] == b"too_large"
    assert letter.headers["herald.first_error"] == b"undecodable:bad_magic"
    assert letter.headers["herald.last_error"] == b"MSG_SIZE_TOO_LARGE"
    assert letter.headers["herald.truncated_from"] == str(len(value)).encode()
    assert letter.headers["herald.original_topic"] == b"notifications.sms"


async def test_a_dead_letter_refused_at_any_size_is_given_up_not_retried(
    make_lane: Any,
) -> None:
    out = SizeLimitedPublisher(limit=10)  # not even the headers fit
    lane = make_lane(ScriptedHandler(), out)

    async with asyncio.timeout(5):
        assert await lane._poison(record(b"x" * 1000), "wrong_channel")

    assert out.on(DLQ) == []


async def test_a_failure_that_repeats_is_dead_lettered_as_a_processing_error(
    make_lane: Any,
) -> None:
    handler = ScriptedHandler(*(KeyError("body") for _ in range(100)))
    out = MemoryPublisher()
    lane = make_lane(handler, out)
    d = delivery(attempt=2)
    raw = codec.encode(codec.DELIVERY, d)

    async with asyncio.timeout(5):
        done = await lane._handle(d, record(raw, topic="notifications.sms.retry.1"), False)

    assert done
    assert handler.calls == 5
    [letter] = out.on(DLQ)
    assert letter.value == raw
    assert letter.headers["herald.reason"] == b"processing_error:KeyError"
    # A redrive goes to the channel topic, not back to the retry tier.
    assert letter.headers["herald.original_topic"] == b"notifications.sms"


@pytest.mark.parametrize(
    "outage",
    [
        KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)),
        NoHostAvailable("no host answered", {}),
        ConnectionError("connection refused"),
    ],
    ids=["kafka", "cassandra", "socket"],
)
async def test_an_outage_is_waited_out_however_long(make_lane: Any, outage: Exception) -> None:
    handler = ScriptedHandler(*(outage for _ in range(12)))
    out = MemoryPublisher()
    lane = make_lane(handler, out)
    d = delivery()

    async with asyncio.timeout(5):
        assert await lane._handle(d, record(codec.encode(codec.DELIVERY, d)), False)

    assert handler.calls == 13
    assert out.records == []


async def test_a_shutdown_leaves_the_record_unfinished_without_retrying(make_lane: Any) -> None:
    # The handler gives up at shutdown (`Stopping`): the record is neither retried nor
    # dead-lettered, its offset is not passed, and it comes back after the restart.
    handler = ScriptedHandler(Stopping(), KeyError("never reached"))
    out = MemoryPublisher()
    lane = make_lane(handler, out)
    d = delivery()

    async with asyncio.timeout(5):
        assert not await lane._handle(d, record(codec.encode(codec.DELIVERY, d)), False)

    assert handler.calls == 1
    assert out.records == []


async def test_an_outage_during_shutdown_stops_the_waiting(make_lane: Any) -> None:
    handler = ScriptedHandler(*(NoHostAvailable("down", {}) for _ in range(50)))
    out = MemoryPublisher()
    lane = make_lane(handler, out)
    handler.stopping.set()
    d = delivery()

    async with asyncio.timeout(5):
        assert not await lane._handle(d, record(codec.encode(codec.DELIVERY, d)), False)

    assert handler.calls == 1
    assert out.records == []


class LeaderlessConsumer:
    """A consumer of a topic just created: the first watermark reads find no leader."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.assigned: list[TopicPartition] = []
        self.committed_offsets: list[TopicPartition] = []

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[Any]:
        return [TopicPartition(tp.topic, tp.partition, OFFSET_INVALID) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return 0, 42

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.committed_offsets += offsets

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned += partitions


async def test_a_new_group_waits_out_a_partition_without_a_leader_and_takes_it(
    make_lane: Any,
) -> None:
    lane = make_lane(ScriptedHandler(), MemoryPublisher())
    lane.settings = lane.settings.model_copy(update={"start_at": "latest"})
    lane._loop = asyncio.get_running_loop()
    consumer = LeaderlessConsumer(failures=2)
    tp = TopicPartition("notifications.sms", 0)

    # librdkafka calls it on the consumer's thread; an error escaping it kills that thread.
    await asyncio.to_thread(lane._on_assign, consumer, [tp])

    assert [(p.partition, p.offset) for p in consumer.assigned] == [(0, 42)]
    assert [(p.partition, p.offset) for p in consumer.committed_offsets] == [(0, 42)]
    assert lane.ready.is_set()
