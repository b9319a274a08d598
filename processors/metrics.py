"""Prometheus metrics of the processor, served on `metrics_port` (default 9401)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("herald_processor_requests_total", "Request records consumed")
DECISIONS = Counter(
    "herald_processor_decisions_total",
    "Status events written by the processor",
    ["outcome", "reason"],
)
DELIVERIES = Counter(
    "herald_processor_deliveries_total", "Deliveries fanned out", ["channel", "lane"]
)
DLQ = Counter("herald_processor_dlq_total", "Requests dead-lettered", ["reason"])
CACHE_LOOKUPS = Counter("herald_processor_cache_lookups_total", "Cache lookups", ["kind", "result"])
CACHE_HIT_RATE = Gauge("herald_processor_cache_hit_rate", "Cache hits / lookups since start")
CASSANDRA_RETRIES = Counter(
    "herald_processor_cassandra_retries_total", "Cassandra queries retried (fail closed)"
)
BATCH_RETRIES = Counter(
    "herald_processor_batch_retries_total", "Batches retried whole after an outage"
)
SKIPPED = Counter(
    "herald_processor_skipped_total",
    "Request records the consumer skipped past (a jump in offsets, processors/gaps.py)",
)
REFETCHED = Counter(
    "herald_processor_refetched_total",
    "Skipped request records read again and decided by the worker (processors/gaps.py)",
)
RELEASED = Counter("herald_processor_released_total", "Held requests released by the scheduler")
LATENCY = Histogram(
    "herald_processor_latency_seconds",
    "Time to decide one batch of request records",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


# Label lookups cost microseconds each (a lock and a tuple key); the hot path counts per
# record, so it keeps the children.
@functools.cache
def decision(outcome: str, reason_kind: str) -> Counter:
    return DECISIONS.labels(outcome, reason_kind)


@functools.cache
def delivery(channel: str, lane: str) -> Counter:
    return DELIVERIES.labels(channel, lane)


DIGESTS = Counter(
    "herald_processor_digests_total", "Digests published (each collects one user's requests)"
)
