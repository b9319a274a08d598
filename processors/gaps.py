"""Records the consumer skipped, seen as a jump in a partition's offsets, and read again.

herald acks requests to Faust in the order it received them, so that Faust's commit (the
end of the acked prefix) never passes an unfinished record. That holds only if every
offset reaches the worker. The request topics have no transactions and no compaction, so
their offsets are contiguous: a record arriving past the next expected offset means the
records in between were skipped on the way. faust-streaming 0.15 does that right after a
restart's recovery (docs/processor.md). The worker reads the skipped offsets again with a
plain consumer outside the group (`Refetcher`) and decides them before the record that
revealed the jump, so the acked prefix stays gap-free and a user's order holds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Consumer, Message, TopicPartition

from infra.settings import KafkaSettings
from schemas.errors import HeraldError

log = logging.getLogger(__name__)


@dataclass
class Gaps:
    """The next offset expected per partition."""

    expected: dict[int, int] = field(default_factory=dict)

    def check(self, partition: int, offset: int, committed: int | None = None) -> range | None:
        """The offsets skipped right before `offset`, if any. `committed` is the group's
        committed offset: it stands in before the first record of the partition, and wins
        when it is ahead (another worker owned the partition meanwhile and moved it on). A
        record at or below the expected offset (a redelivery after a seek) skips nothing."""
        want = self.expected.get(partition)
        if want is None or (committed is not None and committed > want):
            want = committed
        self.expected[partition] = offset + 1
        if want is not None and offset > want:
            return range(want, offset)
        return None


@dataclass
class Refetched:
    """The records read again, in offset order, and the offsets that no longer exist
    (deleted by retention before they could be read again)."""

    records: list[Message]
    gone: range


class RefetchTimeout(HeraldError):
    """The skipped records could not be read within the time allowed (Kafka unreachable)."""

    retriable = True


class Refetcher:
    """Reads given offsets of one partition, with a consumer that never joins the group and
    never commits. Blocking: call it from a thread."""

    def __init__(self, kafka: KafkaSettings, client: str = "processor-refetch") -> None:
        self._config = {
            **kafka.base_config(client),
            "group.id": "herald-processor-refetch",  # required by the client, never joined
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",  # below the log start: read from it
        }
        self._consumer: Consumer | None = None

    def fetch(
        self, topic: str, partition: int, offsets: range, timeout_s: float = 30.0
    ) -> Refetched:
        consumer = self._client()
        consumer.assign([TopicPartition(topic, partition, offsets.start)])
        records: list[Message] = []
        first: int | None = None  # the first offset that still exists
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    log.warning("refetch read error", extra={"topic": topic, "error": str(err)})
                    continue
                at = cast(int, msg.offset())
                if at < offsets.start:
                    continue
                if first is None:
                    first = at
                if at >= offsets.stop:
                    break
                records.append(msg)
                if at == offsets.stop - 1:
                    break
            else:
                raise RefetchTimeout(
                    f"{topic}[{partition}] offsets {offsets.start} to {offsets.stop - 1}: "
                    f"{len(records)} read in {timeout_s:.0f} s"
                )
        finally:
            consumer.unassign()
        # Below the log's start the consumer reads from that start: the rest was deleted.
        end = min(first, offsets.stop) if first is not None else offsets.stop
        return Refetched(records, range(offsets.start, end))

    def log_start(self, topic: str, partition: int, timeout_s: float = 10.0) -> int:
        """The partition's first offset still stored: where a group without a committed
        offset starts reading (auto.offset.reset = earliest)."""
        low, _high = self._client().get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout_s
        )
        return int(low)

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
