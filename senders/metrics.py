"""Prometheus metrics of the sender (served on :9402 by default)."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "herald_deliveries_total",
    "Delivery outcomes: sent, failed, retried, dead_lettered, dropped, duplicate",
    ["channel", "provider", "outcome"],
)
PROVIDER_LATENCY = Histogram(
    "herald_provider_latency_seconds",
    "Time of one provider call",
    ["provider", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES = Counter("herald_retries_total", "Deliveries queued for a retry tier", ["channel", "tier"])
DEAD_LETTERS = Counter(
    "herald_dead_letters_total", "Deliveries dead-lettered", ["channel", "reason"]
)
FAILOVERS = Counter(
    "herald_failovers_total", "Sends moved to a fallback provider", ["channel", "provider"]
)
IN_FLIGHT = Gauge("herald_sender_in_flight", "Deliveries being processed by this process")
BREAKER_STATE = Gauge(
    "herald_breaker_state",
    "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
    ["provider"],
)
ASSIGNED = Gauge(
    "herald_sender_assigned_partitions", "Partitions assigned per lane", ["channel", "lane"]
)
PAUSED = Gauge("herald_sender_paused_partitions", "Partitions paused per lane", ["channel", "lane"])
# How well the ledger's writes share round trips: small batches cost Cassandra far more
# per delivery (a Paxos round per batch), so these show why the ledger got expensive.
LEDGER_BATCH_ROWS = Histogram(
    "herald_ledger_batch_rows",
    "Writes per ledger batch (conditional: one Paxos round; plain: one unlogged batch)",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 100, 200),
)
LEDGER_BATCH_SECONDS = Histogram(
    "herald_ledger_batch_seconds",
    "Round trip of one ledger batch",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LEDGER_BATCH_REFUSED = Counter(
    "herald_ledger_batch_refused_total",
    "Conditional ledger batches refused (a row held elsewhere): rows read, the rest resent",
)


# The labelled children the hot path touches for every delivery, looked up once:
# `labels()` costs ~4 µs on the dev VM (key tuple, lock), `inc`/`observe` ~1.5.
@functools.cache
def delivered(channel: str, provider: str, outcome: str) -> Any:
    return DELIVERIES.labels(channel, provider, outcome)


@functools.cache
def provider_latency(provider: str, result: str) -> Any:
    return PROVIDER_LATENCY.labels(provider, result)
