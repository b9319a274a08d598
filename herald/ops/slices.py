"""Reading bounded slices of topics: time windows resolved to offsets, read to an end.

The ops tools never subscribe: they assign partitions at exact offsets under a group of
their own (so no running service's group is touched) and stop at end offsets fixed when
they start, so records produced meanwhile — including their own — are never re-read.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from infra.settings import KafkaSettings

_RELATIVE = re.compile(r"^-?(?P<n>\d+(?:\.\d+)?)(?P<unit>s|m|h|d|w)(?: ago)?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, now_ms: int | None = None) -> int:
    """Epoch milliseconds of `now`, an age (`90m`, `-2h`, `1d ago`), ISO 8601 or epoch ms.

    A naive ISO time is taken as UTC.
    """
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    text = text.strip().lower()
    if text == "now":
        return now
    if text.isdigit() and len(text) >= 12:
        return int(text)  # epoch milliseconds
    m = _RELATIVE.match(text)
    if m:
        return now - int(float(m["n"]) * _UNIT_S[m["unit"]] * 1000)
    try:
        parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO 8601, 'now' or e.g. 2h, 30m)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int  # first offset to read
    end: int  # first offset not to read

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def ops_consumer(kafka: KafkaSettings, purpose: str, run_id: str | None = None) -> Consumer:
    """A consumer under its own throwaway group, `herald-<purpose>-<id>`; never commits."""
    group = f"herald-{purpose}-{run_id or uuid.uuid4().hex[:12]}"
    config = kafka.consumer_config(f"ops-{purpose}", group)
    config.update({"enable.auto.commit": False, "enable.partition.eof": True})
    return Consumer(config)


def partitions(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {topic}"))
    return sorted(meta.partitions)


def watermarks(consumer: Consumer, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        for p in partitions(consumer, topic, timeout)
    }


def resolve_window(
    consumer: Consumer, topic: str, start_ms: int, end_ms: int, timeout: float = 10.0
) -> list[PartitionRange]:
    """Offsets of the records with start_ms <= timestamp < end_ms, per partition.

    Uses the broker's offsets-for-times lookup: the first offset whose timestamp is at or
    after the instant, or none (-1) when every record is older, which means "the end".
    """
    marks = watermarks(consumer, topic, timeout)

    def lookup(ms: int) -> dict[int, int]:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, ms) for p in marks], timeout=timeout
        )
        return {
            tp.partition: (tp.offset if tp.offset >= 0 else marks[tp.partition][1]) for tp in found
        }

    starts, ends = lookup(start_ms), lookup(end_ms)
    return [PartitionRange(p, starts[p], max(starts[p], ends[p])) for p in sorted(marks)]


def whole_topic(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[PartitionRange]:
    return [
        PartitionRange(p, lo, hi) for p, (lo, hi) in watermarks(consumer, topic, timeout).items()
    ]


def read_ranges(
    consumer: Consumer,
    topic: str,
    ranges: list[PartitionRange],
    *,
    batch_size: int = 500,
    idle_timeout_s: float = 30.0,
) -> Iterator[list[Message]]:
    """Batches of the records inside `ranges`, in offset order per partition.

    Done per partition once the consumer's position reaches the end offset; positions
    also move past transaction markers, which are never delivered as records.
    """
    pending = {r.partition: r for r in ranges if r.size > 0}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, r.start) for p, r in pending.items()])
    last_progress = time.monotonic()
    try:
        while pending:
            msgs = consumer.consume(batch_size, timeout=0.5)
            batch = []
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                r = pending.get(msg.partition() or 0)
                if r is not None and (msg.offset() or 0) < r.end:
                    batch.append(msg)
            if batch:
                yield batch
            done = []
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= pending[tp.partition].end:
                    done.append(tp.partition)
            if msgs or done:
                last_progress = time.monotonic()
            for p in done:
                del pending[p]
            if pending and time.monotonic() - last_progress > idle_timeout_s:
                raise TimeoutError(
                    f"no progress reading {topic} partitions {sorted(pending)} for "
                    f"{idle_timeout_s:.0f}s (retriable: is the broker reachable?)"
                )
    finally:
        consumer.unassign()


Headers = list[tuple[str, str | bytes | None]]


def header_list(msg: Message) -> Headers:
    raw = msg.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def list_offsets(
    admin: AdminClient, tps: Iterable[tuple[str, int]], *, latest: bool, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """Earliest or latest (last stable) offsets of many partitions in one batched request."""
    spec = OffsetSpec.latest() if latest else OffsetSpec.earliest()
    wanted = {TopicPartition(t, p): spec for t, p in set(tps)}
    if not wanted:
        return {}
    futures = admin.list_offsets(
        wanted, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
    )
    return {(tp.topic, tp.partition): fut.result().offset for tp, fut in futures.items()}


def headers(msg: Message) -> dict[str, bytes]:
    """Header values as bytes; a repeated name keeps its last value."""
    out: dict[str, bytes] = {}
    for k, v in header_list(msg):
        out[k] = v.encode() if isinstance(v, str) else (v or b"")
    return out
