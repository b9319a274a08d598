"""The rate-limit table's changelog records, produced by herald's own producer per batch.

A Faust table sends one changelog record per write through Faust's producer path: a
future, its buffer, a task hop, then aiokafka's pure-Python producer. A py-spy profile of
the processor in `python -m herald.bench` put that path at ~20% of the processor's CPU
(~190 µs a write; one per capped request and channel). The record is the same either way
(the table's own key and value serializers, the partition of the request being decided),
so `ProducedChangelogTable` hands it to a `ChangelogSink` instead, which queues it on
librdkafka (`infra.kafka_producer`) and is made durable once per batch, before the
batch's event ids are recorded: a crash before that replays the batch, which writes the
same entries again. Faust still reads the changelog back on start and on rebalance.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
from confluent_kafka import KafkaException

from infra.kafka_producer import AsyncProducer, Batch

# (topic, partition, key, value, headers) as Faust would have produced it.
Record = tuple[str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]]]


class ChangelogSink:
    """Changelog records queued as tables are written; `durable` waits for their acks."""

    def __init__(self, producer: AsyncProducer) -> None:
        self._producer = producer
        self._pending: list[Record] = []
        # Batches sent and not yet seen acked by a `durable` call, with their records (sent
        # again if the broker refused any: a repeat of a changelog record is harmless).
        self._inflight: list[tuple[asyncio.Task[None], Batch, list[Record]]] = []
        # The newest record of every key not yet known durable: what a refused one is
        # replaced by when sent again, so an older value never lands after a newer one.
        self._latest: dict[tuple[str, int | None, bytes | None], Record] = {}

    def add(self, record: Record) -> None:
        self._pending.append(record)
        self._latest[record[:3]] = record

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(self) -> None:
        """Queue what was added on librdkafka now, without waiting: called as a batch's
        outputs are queued, so both share the producer's linger instead of lingering in
        turn (20 ms each)."""
        if not self._pending:
            return
        records, self._pending = self._pending, []
        batch = self._producer.batch()
        try:
            for topic, partition, key, value, headers in records:
                batch.send(topic, value, key=key, headers=headers, partition=partition)
        except BaseException:
            self._pending[:0] = records  # those already queued will simply repeat
            raise
        # One task per batch: two lanes may wait for the same records.
        self._inflight.append((asyncio.ensure_future(batch.wait()), batch, records))

    async def durable(self) -> None:
        """Return once every record added so far is acked. Raises KafkaException (an
        outage: the caller retries its batch) if the broker refused any; their keys'
        newest records are sent again by the next call."""
        self.send()
        for entry in list(self._inflight):
            task, batch, records = entry
            await asyncio.shield(task)
            if entry in self._inflight:
                self._inflight.remove(entry)
                if batch.failed:
                    # Sent again as their keys' newest records; a key whose newest record
                    # is already durable (dropped from `_latest`) needs nothing.
                    again = {r[:3]: self._latest.get(r[:3]) for r in records}
                    self._pending[:0] = [r for r in again.values() if r is not None]
                else:
                    for r in records:
                        if self._latest.get(r[:3]) is r:
                            del self._latest[r[:3]]
            if batch.failed:
                raise KafkaException(batch.failed[0][1])


class ProducedChangelogTable(faust.Table):
    """A Faust table whose changelog records go to a `ChangelogSink`, not Faust's producer.
    Everything else (reads, recovery from the changelog, partition assignment) is Faust's."""

    sink: ChangelogSink | None = None

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> Any:
        sink = self.sink
        if sink is None or partition is None:
            # Not wired (the app used without a worker), or a partition only Faust's own
            # partitioner would pick: Faust's way.
            return super().send_changelog(partition, key, value, key_serializer, value_serializer)
        topic: Any = self.changelog_topic  # a faust.Topic (its type stubs say less)
        # As `Channel.as_future_message` serializes them.
        headers = topic.prepare_headers(None)
        raw_key, headers = topic.prepare_key(
            key, key_serializer or self.key_serializer, None, headers
        )
        raw_value, headers = topic.prepare_value(
            value, value_serializer or self.value_serializer, None, headers
        )
        sink.add((topic.get_topic_name(), partition, raw_key, raw_value, _headers(headers)))
        # What `Table.on_key_set` reads of the future Faust would return.
        return SimpleNamespace(message=SimpleNamespace(partition=partition))


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), bytes(v)) for k, v in items]
