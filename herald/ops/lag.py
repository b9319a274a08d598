"""Consumer lag of every herald consumer group, in records and in seconds.

Lag in records is the high watermark minus the group's committed offset per partition.
Lag in seconds is the age of the oldest unconsumed record: the timestamp of the record at
the committed offset, read by a probe consumer of its own (it never joins the group).
This is the seed's "number of queued notifications", per channel topic.

Run: `python -m herald.ops.lag` (Prometheus metrics on :9403, HERALD_LAG__PORT).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter, start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from herald.ops import slices
from herald.ops.settings import LagSection, OpsSettings
from infra.settings import KafkaSettings

log = logging.getLogger("herald.ops.lag")  # not "__main__" when run with -m

STAMP_CACHE = 100_000
ERRORS = Counter("herald_lag_exporter_errors_total", "Failed lag refreshes")


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int  # -1 when the group never committed here
    low: int
    high: int
    oldest_ms: int | None  # timestamp of the oldest unconsumed record

    @property
    def records(self) -> int:
        start = self.committed if self.committed >= 0 else self.low
        return max(0, self.high - max(start, self.low))

    def seconds(self, now_ms: int) -> float:
        if self.records == 0 or self.oldest_ms is None:
            return 0.0
        return max(0.0, (now_ms - self.oldest_ms) / 1000)


@dataclass(frozen=True)
class TopicLag:
    group: str
    topic: str
    records: int
    seconds: float
    committed: int  # sum over partitions, for throughput from deltas
    high: int


def by_topic(parts: Iterable[PartitionLag], now_ms: int) -> list[TopicLag]:
    grouped: dict[tuple[str, str], list[PartitionLag]] = {}
    for p in parts:
        grouped.setdefault((p.group, p.topic), []).append(p)
    return [
        TopicLag(
            group,
            topic,
            sum(p.records for p in ps),
            max(p.seconds(now_ms) for p in ps),
            sum(max(p.committed, p.low) for p in ps),
            sum(p.high for p in ps),
        )
        for (group, topic), ps in sorted(grouped.items())
    ]


class LagProbe:
    """Reads committed offsets, watermarks and oldest-record timestamps; thread-unsafe."""

    def __init__(self, kafka: KafkaSettings, section: LagSection | None = None) -> None:
        self.section = section or LagSection()
        self.admin = AdminClient(dict(kafka.base_config("ops-lag")))
        self.consumer = slices.ops_consumer(kafka, "ops-lag")
        self._stamps: OrderedDict[tuple[str, int, int], int] = OrderedDict()

    def close(self) -> None:
        self.consumer.close()

    def groups(self) -> list[str]:
        if self.section.groups:
            return list(self.section.groups)
        listed = self.admin.list_consumer_groups(request_timeout=10).result()
        return sorted(
            g.group_id
            for g in listed.valid
            if g.group_id.startswith(self.section.group_prefix)
            and not g.group_id.startswith(tuple(self.section.exclude_prefixes))
        )

    def committed(self, groups: list[str]) -> dict[str, dict[tuple[str, int], int]]:
        """Committed offsets per group; the requests (one group each) run concurrently."""
        pending = {
            group: self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=10
            )[group]
            for group in groups
        }
        out = {}
        for group, fut in pending.items():
            try:
                result = fut.result()
            except KafkaException as exc:
                # A group deleted between listing and asking; the next refresh forgets it.
                log.info("no offsets for group %s: %s", group, exc)
                continue
            out[group] = {
                (tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or []
            }
        return out

    def measure(self, groups: list[str] | None = None) -> list[PartitionLag]:
        offsets = self.committed(groups if groups is not None else self.groups())
        every = {tp for committed in offsets.values() for tp in committed}
        lows = slices.list_offsets(self.admin, every, latest=False)
        highs = slices.list_offsets(self.admin, every, latest=True)
        marks = {tp: (lows[tp], highs[tp]) for tp in every}

        def start(tp: tuple[str, int], off: int) -> int:
            low = marks[tp][0]
            return max(off, low) if off >= 0 else low

        wanted: dict[tuple[str, int], set[int]] = {}
        for tps in offsets.values():
            for tp, off in tps.items():
                if start(tp, off) < marks[tp][1]:
                    wanted.setdefault(tp, set()).add(start(tp, off))
        stamps = self._timestamps(wanted)
        return [
            PartitionLag(group, *tp, off, *marks[tp], stamps.get((*tp, start(tp, off))))
            for group, tps in offsets.items()
            for tp, off in sorted(tps.items())
        ]

    def _timestamps(
        self, wanted: dict[tuple[str, int], set[int]]
    ) -> dict[tuple[str, int, int], int]:
        """Timestamp of the first record at or after each wanted offset.

        A record's timestamp never changes, so answers are cached: a group stuck at one
        offset (the case that matters) costs one read, not one per refresh.
        """
        out: dict[tuple[str, int, int], int] = {}
        queue: dict[tuple[str, int], list[int]] = {}
        for tp, offs in wanted.items():
            for o in sorted(offs):
                if (*tp, o) in self._stamps:
                    out[(*tp, o)] = self._stamps[(*tp, o)]
                else:
                    queue.setdefault(tp, []).append(o)
        if queue:
            self._read_stamps(queue, out)
        while len(self._stamps) > STAMP_CACHE:
            self._stamps.popitem(last=False)
        return out

    def _read_stamps(
        self, queue: dict[tuple[str, int], list[int]], out: dict[tuple[str, int, int], int]
    ) -> None:
        """One pass over every partition: read at its lowest wanted offset, then seek to
        the next one (several groups often wait at different offsets of one partition)."""
        self.consumer.assign([TopicPartition(t, p, offs[0]) for (t, p), offs in queue.items()])
        deadline = time.monotonic() + 5
        try:
            while queue and time.monotonic() < deadline:
                for msg in self.consumer.consume(500, timeout=0.2):
                    key = (msg.topic() or "", msg.partition() or 0)
                    offs = queue.get(key)
                    if offs is None:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            # Only transaction markers or aborted records left: nothing waits.
                            del queue[key]
                        else:
                            log.warning("probe read failed: %s", err)
                        continue
                    at = msg.offset() or 0
                    if at < offs[0]:
                        continue  # fetched before the last seek
                    # The first record at or after every wanted offset up to here is this one.
                    while offs and offs[0] <= at:
                        stamp = (*key, offs.pop(0))
                        out[stamp] = self._stamps[stamp] = msg.timestamp()[1]
                    if offs:
                        self.consumer.seek(TopicPartition(*key, offs[0]))
                    else:
                        del queue[key]
        finally:
            self.consumer.unassign()


class LagCollector(Collector):
    """Serves the latest snapshot; a group that went away disappears from the output."""

    def __init__(self) -> None:
        self.partitions: list[PartitionLag] = []
        self.snapshot: list[TopicLag] = []
        self.updated_at = 0.0

    def update(self, partitions: list[PartitionLag]) -> None:
        now = time.time()
        self.partitions, self.snapshot = partitions, by_topic(partitions, int(now * 1000))
        self.updated_at = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        records = GaugeMetricFamily(
            "herald_consumer_lag_records", "Unconsumed records", labels=["group", "topic"]
        )
        seconds = GaugeMetricFamily(
            "herald_consumer_lag_seconds",
            "Age of the oldest unconsumed record",
            labels=["group", "topic"],
        )
        for t in self.snapshot:
            records.add_metric([t.group, t.topic], t.records)
            seconds.add_metric([t.group, t.topic], t.seconds)
        labels = ["group", "topic", "partition"]
        p_records = GaugeMetricFamily(
            "herald_consumer_partition_lag_records", "Unconsumed records", labels=labels
        )
        p_seconds = GaugeMetricFamily(
            "herald_consumer_partition_lag_seconds",
            "Age of the oldest unconsumed record",
            labels=labels,
        )
        now_ms = int(self.updated_at * 1000)
        for p in self.partitions:
            key = [p.group, p.topic, str(p.partition)]
            p_records.add_metric(key, p.records)
            p_seconds.add_metric(key, p.seconds(now_ms))
        yield records
        yield seconds
        yield p_records
        yield p_seconds
        yield GaugeMetricFamily(
            "herald_lag_exporter_updated_timestamp_seconds",
            "When the lag figures were last refreshed",
            value=self.updated_at,
        )


def main() -> None:
    from infra.logging import configure_logging

    settings = OpsSettings()
    configure_logging("lag", settings.log_level)
    section = settings.lag
    probe = LagProbe(settings.kafka, section)
    collector = LagCollector()
    REGISTRY.register(collector)
    start_http_server(section.port, addr=section.host)
    log.info("lag exporter on :%d, every %.1fs", section.port, section.interval_s)
    try:
        while True:
            started = time.monotonic()
            try:
                collector.update(probe.measure())
            except KafkaException as exc:
                ERRORS.inc()
                log.warning("lag refresh failed (retrying): %s", exc)
            time.sleep(max(0.0, section.interval_s - (time.monotonic() - started)))
    finally:
        probe.close()


if __name__ == "__main__":
    main()
