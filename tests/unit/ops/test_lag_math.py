"""Lag arithmetic: committed offsets, retention and empty partitions."""

from __future__ import annotations

import pytest

from herald.ops.lag import LagCollector, PartitionLag, by_topic


def part(committed: int, low: int, high: int, oldest: int | None, p: int = 0) -> PartitionLag:
    return PartitionLag("g", "t", p, committed, low, high, oldest)


def test_records_and_seconds() -> None:
    assert part(10, 0, 15, 1_000).records == 5
    assert part(10, 0, 15, 1_000).seconds(4_000) == 3.0
    assert part(15, 0, 15, None).records == 0 and part(15, 0, 15, None).seconds(9_000) == 0.0
    # Never committed: everything retained is unconsumed.
    assert part(-1, 4, 10, 0).records == 6
    # Committed offset deleted by retention: only what is still there counts.
    assert part(2, 5, 9, 0).records == 4


def test_by_topic_sums_records_and_takes_the_oldest() -> None:
    (t,) = by_topic([part(0, 0, 3, 1_000, 0), part(5, 0, 6, 5_000, 1)], now_ms=11_000)
    assert (t.records, t.seconds, t.committed, t.high) == (4, 10.0, 5, 9)


def test_collector_serves_topic_and_partition_gauges() -> None:
    c = LagCollector()
    c.update([part(0, 0, 3, None, 0), part(1, 0, 1, None, 1)])
    samples = {
        (f.name, tuple(sorted(s.labels.items()))): s.value for f in c.collect() for s in f.samples
    }
    assert samples["herald_consumer_lag_records", (("group", "g"), ("topic", "t"))] == 3
    key = (("group", "g"), ("partition", "1"), ("topic", "t"))
    assert samples["herald_consumer_partition_lag_records", key] == 0
    assert c.updated_at == pytest.approx(
        samples["herald_lag_exporter_updated_timestamp_seconds", ()]
    )
