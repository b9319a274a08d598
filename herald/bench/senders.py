"""The senders alone: `python -m herald.bench.senders` (`make bench-senders`).

Loads N delivery records into a private copy of the channel topics, then drains them with
one sender runtime in this process, every channel routed to the in-process `null` provider
(accepts at once): what the senders themselves cost per delivery (Kafka consume, ledger
claim and finish, status records, offsets), and what they cost Cassandra and Kafka. The
ledger's batch sizes are printed too: a Paxos round per batch, so small batches make each
delivery dear. Real Kafka and Cassandra; nothing asserted.

`--profile out.pstats` runs the drain under cProfile (slower; for where the time goes).
"""

from __future__ import annotations

import asyncio
import cProfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import typer
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from herald.bench.kafkautil import delete_topics, require_broker
from herald.bench.sampler import cpu_seconds, listener_pid
from herald.bench.services import ensure_prefixed_topics
from infra import topics
from infra.settings import KafkaSettings
from schemas import codec
from schemas.channels import Channel
from schemas.events import now_ms
from senders import metrics
from senders.providers.null import NullProvider
from senders.providers.settings import NullSettings
from senders.service import sender
from senders.settings import RoutingSettings, SenderSettings

CHANNELS = (Channel.PUSH_IOS, Channel.PUSH_ANDROID, Channel.EMAIL, Channel.SMS)


def _delivery(channel: Channel, i: int, users: int) -> dict[str, Any]:
    nid = str(uuid.uuid4())
    return {
        "delivery_id": str(uuid.uuid4()),
        "notification_id": nid,
        "event_id": f"bench-{nid}",
        "user_id": f"bench-user-{i % users}",
        "channel": str(channel),
        "category": "transactional",
        "priority": "normal",
        "device_id": None,
        "address": "+14155550100" if channel == Channel.SMS else f"tok-{i}",
        "title": "Order shipped",
        "subject": "Order shipped" if channel == Channel.EMAIL else None,
        "body": "Your order has shipped and will arrive on Tuesday.",
        "attempt": 1,
        "requested_at": now_ms(),
        "created_at": now_ms(),
    }


def _load(kafka: KafkaSettings, prefix: str, n: int, users: int) -> None:
    enc = codec.codec_for(kafka.schema_registry_url)
    producer = Producer(kafka.producer_config("bench-senders-load"))
    for i in range(n):
        d = _delivery(CHANNELS[i % len(CHANNELS)], i, users)
        topic = prefix + topics.channel_topic(Channel(d["channel"]))
        producer.produce(
            topic, enc.encode(codec.DELIVERY, d, topic=topic), key=d["user_id"].encode()
        )
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)


def _sent() -> float:
    total = 0.0
    for metric in metrics.DELIVERIES.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels.get("outcome") in ("sent", "duplicate"):
                total += s.value
    return total


def _batches(kind: str) -> tuple[float, float, float]:
    """(batches, rows, seconds) of the ledger's batches of `kind` so far."""
    count = rows = seconds = 0.0
    for metric in (*metrics.LEDGER_BATCH_ROWS.collect(), *metrics.LEDGER_BATCH_SECONDS.collect()):
        for s in metric.samples:
            if s.labels.get("kind") != kind:
                continue
            if s.name == "herald_ledger_batch_rows_count":
                count = s.value
            elif s.name == "herald_ledger_batch_rows_sum":
                rows = s.value
            elif s.name == "herald_ledger_batch_seconds_sum":
                seconds = s.value
    return count, rows, seconds


def _refused() -> float:
    return sum(
        s.value
        for m in metrics.LEDGER_BATCH_REFUSED.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )


def _thread_cpu(p: psutil.Process, native_id: int | None) -> float:
    for t in p.threads():
        if t.id == native_id:
            return float(t.user_time + t.system_time)
    return 0.0


async def _drain(settings: SenderSettings, n: int, profile: Path | None) -> dict[str, float]:
    me = psutil.Process()
    cas = listener_pid(settings.cassandra.port)
    kafka_port = int(settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    ext = {
        "cassandra": psutil.Process(cas) if cas else None,
        "kafka": psutil.Process(pid) if (pid := listener_pid(kafka_port)) else None,
    }
    async with sender(
        settings, list(Channel), providers={"null": NullProvider(NullSettings())}
    ) as runtime:
        task = asyncio.create_task(runtime.run())
        async with asyncio.timeout(120):
            await runtime.wait_ready()
        # The first delivery: consumers fetching, connections warm. (A metric is polled:
        # the bench watches the runtime from outside, as an operator would.)
        while _sent() < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        start_sent = _sent()
        b0 = {k: _batches(k) for k in ("conditional", "plain")}
        refused0 = _refused()
        c0 = {k: cpu_seconds(p) for k, p in ext.items()}
        loop0 = _thread_cpu(me, threading.main_thread().native_id)
        cpu0, wall0 = cpu_seconds(me), time.perf_counter()
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        last, idle_since = start_sent, time.monotonic()
        while (sent := _sent()) < n:  # every record loaded, counted from the first
            await asyncio.sleep(0.05)
            if sent != last:
                last, idle_since = sent, time.monotonic()
            elif time.monotonic() - idle_since > 30:
                break  # stuck: report what got through
        if prof:
            prof.disable()
            prof.dump_stats(str(profile))
        wall, cpu = time.perf_counter() - wall0, cpu_seconds(me) - cpu0
        loop_cpu = _thread_cpu(me, threading.main_thread().native_id) - loop0
        done = _sent() - start_sent
        out = {"deliveries": done, "expected": n - start_sent, "seconds": wall}
        out |= {"senders_cpu": cpu, "loop_cpu": loop_cpu}
        out.update({k: cpu_seconds(p) - c0[k] for k, p in ext.items()})
        for kind in ("conditional", "plain"):
            b1 = _batches(kind)
            out[f"{kind}_batches"] = b1[0] - b0[kind][0]
            out[f"{kind}_rows"] = b1[1] - b0[kind][1]
            out[f"{kind}_seconds"] = b1[2] - b0[kind][2]
        out["refused"] = _refused() - refused0
        runtime.stop()
        await task
    return out


def main(
    deliveries: int = typer.Option(20_000, help="Delivery records to drain."),
    users: int = typer.Option(5_000, help="Distinct user ids (keys) among them."),
    max_in_flight: int = typer.Option(512, help="The senders' in-flight limit."),
    profile: Path | None = typer.Option(None, help="Write a cProfile of the drain here."),
) -> None:
    """Drain N deliveries through one sender process (null provider) and print its cost."""
    run = uuid.uuid4().hex[:8]
    prefix = f"herald-bench-senders.{run}."
    settings = SenderSettings.model_validate(
        {
            "topic_prefix": prefix,
            "group_prefix": f"herald-bench-senders-{run}",
            "start_at": "earliest",
            "max_in_flight": max_in_flight,
            "metrics_enabled": False,
            # The buckets protect real providers' quotas; the null provider has none.
            "rate_limits": {"per_second": {"null": 1e9}, "default_per_second": 1e9},
            "routing": {name: {"providers": ["null"]} for name in RoutingSettings.model_fields},
        }
    )
    admin = require_broker(settings.kafka)
    ensure_prefixed_topics(settings.kafka, prefix)
    _load(settings.kafka, prefix, deliveries, users)
    # The clock starts at the first `sent`: what the first fetch brought before is not timed.
    # The interpreter and the event loop as `python -m senders run` has them.
    settings.tune_interpreter()
    f = settings.run(_drain(settings, deliveries, profile))
    n = f["deliveries"] or 1
    table = Table("figure", "value")
    table.add_row("deliveries timed", f"{f['deliveries']:,.0f} of {f['expected']:,.0f}")
    table.add_row("deliveries/s", f"{f['deliveries'] / f['seconds']:,.0f}")
    table.add_row("senders CPU µs/delivery", f"{f['senders_cpu'] * 1e6 / n:,.0f}")
    table.add_row("  of which the event loop", f"{f['loop_cpu'] * 1e6 / n:,.0f}")
    table.add_row(
        "  of which the drivers' threads (librdkafka, Cassandra I/O)",
        f"{(f['senders_cpu'] - f['loop_cpu']) * 1e6 / n:,.0f}",
    )
    for k in ("cassandra", "kafka"):
        table.add_row(f"{k} CPU µs/delivery", f"{f[k] * 1e6 / n:,.0f}")
    for kind in ("conditional", "plain"):
        b = f[f"{kind}_batches"] or 1
        table.add_row(
            f"ledger {kind} batches: rows avg, ms avg",
            f"{f[f'{kind}_rows'] / b:,.1f}, {f[f'{kind}_seconds'] * 1000 / b:,.1f}",
        )
    table.add_row("ledger conditional batches refused", f"{f['refused']:,.0f}")
    Console(width=None if Console().is_terminal else 120).print(table)
    # The run's private topic family goes when the run ends.
    delete_topics(admin, (prefix,))


if __name__ == "__main__":
    typer.run(main)
