"""processors/changelog.py: the rate-limit table's changelog records, as Faust would write
them, go out through herald's producer and are durable when `durable` returns."""

from __future__ import annotations

import asyncio
import weakref
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from confluent_kafka import KafkaError, KafkaException
from faust import streams as faust_streams

from infra.kafka_producer import AsyncProducer
from processors.changelog import ChangelogSink, ProducedChangelogTable


class FakeProducer:
    """librdkafka's `produce`, answering every record at once (or refusing the marked)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, int, Any]] = []
        self.refuse: set[bytes] = set()

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int = -1,
        *,
        headers: Any = None,
        on_delivery: Any,
    ) -> None:
        self.records.append((topic, key, value, partition, headers))
        err = KafkaError(KafkaError.REQUEST_TIMED_OUT) if key in self.refuse else None
        on_delivery(err, None)

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return 0


class _At:
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(topic="requests", partition=partition)


def _table(app: faust.App) -> ProducedChangelogTable:
    return ProducedChangelogTable(
        app,
        name="rate-limits",
        default=dict,
        beacon=app.tables.beacon,
        partitions=6,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )


def test_a_write_is_faust_s_changelog_record_through_herald_s_producer() -> None:
    async def main() -> None:
        app = faust.App("changelog-test", broker="kafka://localhost:1", store="memory://")
        table = _table(app)
        fake = FakeProducer()
        producer = AsyncProducer(producer=fake)  # type: ignore[arg-type]
        try:
            table.sink = sink = ChangelogSink(producer)
            at = _At(4)
            faust_streams._current_event.set(weakref.ref(at))  # type: ignore[arg-type]
            table["u1|marketing|sms"] = {"n1": 1_764_000_000_000}
            assert fake.records == []  # queued, not produced, until the batch is made durable
            assert sink.pending == 1
            sink.send()  # as the batch's outputs are queued: on librdkafka, no wait
            assert len(fake.records) == 1 and sink.pending == 0
            await sink.durable()
            topic = table.changelog_topic
            key, _ = topic.prepare_key("u1|marketing|sms", "json", None, {})
            value, _ = topic.prepare_value({"n1": 1_764_000_000_000}, "json", None, {})
            assert fake.records == [(topic.get_topic_name(), key, value, 4, None)]  # no headers
            assert table["u1|marketing|sms"] == {"n1": 1_764_000_000_000}  # the table itself
            assert sink.pending == 0
        finally:
            producer.close()

    asyncio.run(main())


def test_a_refused_record_raises_and_is_sent_again() -> None:
    async def main() -> None:
        fake = FakeProducer()
        producer = AsyncProducer(producer=fake)  # type: ignore[arg-type]
        sink = ChangelogSink(producer)
        sink.add(("cl", 1, b'"a"', b"{}", []))
        sink.add(("cl", 1, b'"b"', b"{}", []))
        fake.refuse = {b'"b"'}
        with pytest.raises(KafkaException):
            await sink.durable()
        assert sink.pending == 2  # both go again, in order
        fake.refuse = set()
        await sink.durable()
        assert [r[1] for r in fake.records] == [b'"a"', b'"b"', b'"a"', b'"b"']
        await sink.durable()  # nothing left: returns at once
        assert len(fake.records) == 4
        producer.close()

    asyncio.run(main())


def test_two_lanes_waiting_together_both_see_the_records_acked() -> None:
    async def main() -> None:
        answers: list[Any] = []

        class Slow(FakeProducer):
            def produce(self, topic: str, value: Any, key: Any, partition: int = -1, *,
                        headers: Any = None, on_delivery: Any) -> None:  # fmt: skip
                self.records.append((topic, key, value, partition, headers))
                answers.append(on_delivery)

        fake = Slow()
        producer = AsyncProducer(producer=fake)  # type: ignore[arg-type]
        sink = ChangelogSink(producer)
        sink.add(("cl", 0, b'"a"', b"{}", []))
        first = asyncio.ensure_future(sink.durable())
        await asyncio.sleep(0)
        second = asyncio.ensure_future(sink.durable())  # nothing of its own, waits for a's
        await asyncio.sleep(0.01)
        assert not first.done() and not second.done()
        for answer in answers:
            answer(None, None)
        await asyncio.wait_for(asyncio.gather(first, second), 2)
        producer.close()

    asyncio.run(main())


def test_a_refused_record_never_lands_after_a_newer_one() -> None:
    async def main() -> None:
        held: list[tuple[bytes | None, Any]] = []

        class Held(FakeProducer):
            """Holds the answers of the first two batches; answers later records at once."""

            def produce(self, topic: str, value: Any, key: Any, partition: int = -1, *,
                        headers: Any = None, on_delivery: Any) -> None:  # fmt: skip
                self.records.append((topic, key, value, partition, headers))
                if len(self.records) <= 3:
                    held.append((value, on_delivery))
                else:
                    on_delivery(None, None)

        fake = Held()
        producer = AsyncProducer(producer=fake)  # type: ignore[arg-type]
        sink = ChangelogSink(producer)
        sink.add(("cl", 0, b'"k"', b"old", []))
        sink.add(("cl", 0, b'"j"', b"j1", []))
        sink.send()
        sink.add(("cl", 0, b'"k"', b"new", []))
        sink.send()
        # The first batch is refused; the second (k's newer value) is acked.
        for value, answer in held:
            answer(KafkaError(KafkaError.REQUEST_TIMED_OUT) if value != b"new" else None, None)
        with pytest.raises(KafkaException):
            await sink.durable()
        await sink.durable()
        sent = [(r[1], r[2]) for r in fake.records]
        assert sent[:3] == [(b'"k"', b"old"), (b'"j"', b"j1"), (b'"k"', b"new")]
        assert (b'"j"', b"j1") in sent[3:]  # j goes again
        assert (b'"k"', b"old") not in sent[3:]  # the older k never lands after the newer
        assert [v for k, v in sent if k == b'"k"'][-1] == b"new"
        await sink.durable()  # nothing left
        producer.close()

    asyncio.run(main())
