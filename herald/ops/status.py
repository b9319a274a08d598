"""`herald status`: infrastructure health, queue depth, throughput and errors per channel.

Throughput comes from offset deltas between two snapshots (records produced: high
watermarks; records consumed: committed offsets); error rates from the services'
`herald_deliveries_total` counters when their metrics endpoints answer.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table
from rich.text import Text

from herald.ops import slices
from herald.ops.common import topic_ref
from herald.ops.lag import LagProbe, TopicLag, by_topic
from herald.ops.settings import OpsSettings
from infra import topics
from schemas.channels import Channel

REQUESTS = "requests"
MAX_GROUP_ROWS = 12
# Outcomes of a provider call; duplicates and drops never reached a provider.
ATTEMPT_OUTCOMES = ("sent", "failed", "retried", "dead_lettered")


@dataclass
class Health:
    ok: bool
    detail: str


@dataclass
class Snapshot:
    at: float
    kafka: Health
    cassandra: Health
    lags: list[TopicLag] = field(default_factory=list)
    produced: dict[str, int] = field(default_factory=dict)  # lane key -> sum of high watermarks
    dlq: dict[str, int] = field(default_factory=dict)  # channel -> records held
    deliveries: dict[tuple[str, str], float] = field(default_factory=dict)  # (channel, outcome)


def _lane(topic: str, prefix: str = "") -> tuple[str, str] | None:
    """(row, lane) of a herald topic: row is a channel or "requests"; lane main|retry|dlq."""
    if not topic.startswith(prefix):
        return None
    topic = topic[len(prefix) :]
    if topic == topics.REQUESTED:
        return REQUESTS, "main"
    if topic == topics.REQUESTED_DLQ:
        return REQUESTS, "dlq"
    try:
        ref = topic_ref(topic)
    except ValueError:
        return None
    if ref.channel is None:
        return None
    return ref.channel.value, "main" if ref.lane in ("main", "priority") else ref.lane


class StatusProbe:
    def __init__(self, settings: OpsSettings) -> None:
        self.settings = settings
        self.admin = AdminClient(
            {**settings.kafka.base_config("ops-status"), "socket.timeout.ms": 3000}
        )
        self.lag = LagProbe(settings.kafka, settings.lag)
        self._session: Any = None

    def close(self) -> None:
        self.lag.close()
        if self._session is not None:
            self._session.cluster.shutdown()

    def _cassandra(self) -> Health:
        from infra.cassandra import connect

        try:
            if self._session is None:
                self._session = connect(self.settings.cassandra, keyspace=False)
            started = time.monotonic()
            row = self._session.execute("SELECT release_version FROM system.local").one()
            ms = (time.monotonic() - started) * 1000
            return Health(True, f"Cassandra {row['release_version']}, {ms:.0f} ms")
        except Exception as exc:  # any driver failure is "down" here, shown as such
            self._session = None
            return Health(False, f"{type(exc).__name__}: {exc}"[:120])

    def _deliveries(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = defaultdict(float)
        for url in self.settings.status.metrics_urls:
            try:
                text = httpx.get(url, timeout=1.0).text
            except httpx.HTTPError:
                continue
            for family in text_string_to_metric_families(text):
                if family.name != "herald_deliveries":
                    continue
                for s in family.samples:
                    if s.name == "herald_deliveries_total":
                        key = (s.labels.get("channel", "?"), s.labels.get("outcome", "?"))
                        out[key] += s.value
        return dict(out)

    def take(self) -> Snapshot:
        now = time.time()
        try:
            meta = self.admin.list_topics(timeout=3)
            kafka = Health(True, f"{len(meta.brokers)} broker(s), {len(meta.topics)} topics")
        except Exception as exc:  # an unreachable broker is reported, not raised
            return Snapshot(now, Health(False, str(exc)[:120]), self._cassandra())
        snap = Snapshot(now, kafka, self._cassandra(), deliveries=self._deliveries())
        snap.lags = by_topic(self.lag.measure(), int(now * 1000))
        lanes = {
            (name, p): lane
            for name, tmeta in meta.topics.items()
            if (lane := _lane(name, self.settings.topic_prefix)) is not None
            for p in tmeta.partitions
        }
        highs = slices.list_offsets(self.admin, lanes, latest=True)
        dlq_lows = slices.list_offsets(
            self.admin, [tp for tp, lane in lanes.items() if lane[1] == "dlq"], latest=False
        )
        for tp, (row, kind) in lanes.items():
            if kind == "dlq":
                snap.dlq[row] = snap.dlq.get(row, 0) + highs[tp] - dlq_lows[tp]
            else:
                key = f"{row}:{kind}"
                snap.produced[key] = snap.produced.get(key, 0) + highs[tp]
        return snap


def rows(prev: Snapshot | None, cur: Snapshot, prefix: str = "") -> list[dict[str, Any]]:
    """Per channel (and the request topic): queue, age, rates; rates need `prev`."""
    dt = (cur.at - prev.at) if prev is not None else 0.0
    names = [REQUESTS, *(c.value for c in Channel)]
    out = []
    for name in names:
        main = [t for t in cur.lags if _lane(t.topic, prefix) == (name, "main")]
        retry = [t for t in cur.lags if _lane(t.topic, prefix) == (name, "retry")]
        row: dict[str, Any] = {
            "name": name,
            "queued": sum(t.records for t in main),
            "lag_s": max((t.seconds for t in main), default=0.0),
            "retry_queued": sum(t.records for t in retry),
            "dlq": cur.dlq.get(name, 0),
            "in_per_s": None,
            "out_per_s": None,
            "error_rate": None,
        }
        if prev is not None and dt > 0:
            key = f"{name}:main"
            row["in_per_s"] = max(0, cur.produced.get(key, 0) - prev.produced.get(key, 0)) / dt
            before = {(t.group, t.topic): t.committed for t in prev.lags}
            consumed = sum(
                max(0, t.committed - before.get((t.group, t.topic), t.committed)) for t in main
            )
            row["out_per_s"] = consumed / dt
            done = {
                o: cur.deliveries.get((name, o), 0.0) - prev.deliveries.get((name, o), 0.0)
                for o in ATTEMPT_OUTCOMES
            }
            attempts = sum(done.values())
            if attempts > 0:
                row["error_rate"] = 1 - done["sent"] / attempts
        out.append(row)
    return out


def render(prev: Snapshot | None, cur: Snapshot, prefix: str = "") -> Group:
    health = Table(title="herald status", show_header=False, expand=False)
    for label, h in (("Kafka", cur.kafka), ("Cassandra", cur.cassandra)):
        mark = Text("● up", style="green") if h.ok else Text("● down", style="bold red")
        health.add_row(label, mark, h.detail)
    table = Table(title="queues (lag = age of the oldest unconsumed record)")
    for col in ("topic", "queued", "lag", "in/s", "out/s", "retry", "DLQ", "errors"):
        table.add_column(col, justify="left" if col == "topic" else "right")
    for r in rows(prev, cur, prefix):
        lag_style = "red" if r["lag_s"] > 60 else "yellow" if r["lag_s"] > 10 else ""
        table.add_row(
            r["name"],
            f"{r['queued']:,}",
            Text(f"{r['lag_s']:.1f}s", style=lag_style),
            "-" if r["in_per_s"] is None else f"{r['in_per_s']:,.1f}",
            "-" if r["out_per_s"] is None else f"{r['out_per_s']:,.1f}",
            f"{r['retry_queued']:,}",
            Text(f"{r['dlq']:,}", style="red" if r["dlq"] else ""),
            "-" if r["error_rate"] is None else f"{r['error_rate']:.1%}",
        )
    behind = sorted((t for t in cur.lags if t.records), key=lambda t: -t.seconds)
    groups = Table(title=f"consumer groups behind ({len(behind)}, oldest first)")
    for col in ("group", "topic", "lag records", "lag seconds"):
        groups.add_column(col, justify="left" if col in ("group", "topic") else "right")
    for t in behind[:MAX_GROUP_ROWS]:
        groups.add_row(t.group, t.topic, f"{t.records:,}", f"{t.seconds:.1f}")
    stamp = Text(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(cur.at)), style="dim")
    return Group(health, table, groups, stamp)
