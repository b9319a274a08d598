"""The processor alone: `python -m herald.bench.processor [--requests N] [--users U]`.

Seeds U users (an iPhone, an Android phone, email and phone each; locales en, ko-KR, de)
and a template per locale and channel, then publishes to a private request topic, with
the seed's channel mix (push 10 : SMS 1 : email 5) and category mix (transactional 50,
marketing 30, social 15, security 5 per 100: marketing and social are rate-capped, so
their requests write the rate-limit table; `--category transactional` leaves that out):

- a **cold** phase: one request per user, so every user is a cache miss;
- a **warm** phase: N requests over the same users, so every user is a cache hit,
  published once the cold phase is decided (the phases never overlap).

One real processor process (`python -m processors`, Faust) decides them; the bench times
each phase from its first decision to its last and reads the CPU time of the processor,
Cassandra's JVM and Kafka's JVM at the phase boundaries: CPU µs per request per process.
The same data then goes through a **plain** reference: the same `Processor.handle_batch`
driven by a bare confluent-kafka consume loop (`--engine plain`), to show what Faust
itself costs. Prints figures; asserts nothing. Deliveries go to the real channel topics,
as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from cassandra.concurrent import execute_concurrent_with_args
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from herald.bench.kafkautil import delete_topics, require_broker
from herald.bench.load import CATEGORY_WEIGHTS
from herald.bench.sampler import cpu_seconds, listener_pid
from infra.cassandra import connect
from infra.kafka_producer import AsyncProducer
from infra.settings import DEV_PROFILE, CassandraSettings, KafkaSettings
from processors.pipeline import Incoming, Processor, Source
from processors.settings import ProcessorSettings
from schemas import codec, ids
from schemas.events import now_ms

LOCALES = ("en", "ko-KR", "de")
SEED_MIX = "seed"  # `--category`: each request's category drawn from the seed's weights
CHANNEL_MIX = (("push", 10), ("sms", 1), ("email", 5))
_TEXT = {
    "en": ("Hello {{ name }}", "Hi {{ name }}, order {{ ref }} shipped."),
    "ko-KR": ("{{ name }}님", "{{ name }}님, 주문 {{ ref }} 발송."),
    "de": ("Hallo {{ name }}", "Hallo {{ name }}, Bestellung {{ ref }} ist unterwegs."),
}


@dataclass
class Phase:
    name: str
    requests: int = 0
    seconds: float = 0.0
    requests_per_s: float = 0.0
    # CPU time per request decided in the phase, µs, per process.
    processor_us: float = 0.0
    cassandra_us: float = 0.0
    kafka_us: float = 0.0


@dataclass
class BenchResult:
    engine: str
    users: int
    phases: list[Phase] = field(default_factory=list)
    deliveries: int = 0
    peak_rss_mib: float = 0.0
    cache_hit_rate: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _token(platform: str) -> str:
    if platform == "ios":
        return uuid.uuid4().hex * 2  # APNs: 64 hex digits
    return f"bench{uuid.uuid4().hex[:6]}:{uuid.uuid4().hex}{uuid.uuid4().hex}"  # FCM shape


def _seed(users: int, template_id: str) -> list[str]:
    session = connect(CassandraSettings())
    try:
        uids = [f"bench-proc-{uuid.uuid4().hex}" for _ in range(users)]
        execute_concurrent_with_args(
            session,
            session.prepare(
                "INSERT INTO users (user_id, email, phone, locale, timezone) VALUES (?,?,?,?,?)"
            ),
            [
                (u, f"{u}@example.com", "+14155550100", LOCALES[i % 3], "UTC")
                for i, u in enumerate(uids)
            ],
            concurrency=64,
        )
        execute_concurrent_with_args(
            session,
            session.prepare(
                "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
                " VALUES (?,?,?,?)"
            ),
            [(u, f"{p}-1", p, _token(p)) for u in uids for p in ("ios", "android")],
            concurrency=64,
        )
        for loc, (title, body) in _TEXT.items():
            for ch in ("push", "sms", "email"):
                session.execute(
                    "INSERT INTO templates (template_id, locale, channel, title, subject, body,"
                    " html) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (template_id, loc, ch, title, title, body, f"<p>{body}</p>"),
                )
        return uids
    finally:
        session.cluster.shutdown()


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(herald_processor_\w+?)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m[1]] = out.get(m[1], 0.0) + float(m[2])
    return out


def _request(
    tag: str, i: int, uid: str, template_id: str, rng: random.Random, category: str
) -> bytes:
    eid = f"bench-{tag}-{i}"
    if category == SEED_MIX:
        category = rng.choices(list(CATEGORY_WEIGHTS), list(CATEGORY_WEIGHTS.values()))[0]
    req = {
        "event_id": eid,
        "notification_id": ids.notification_id(eid),
        "source": "bench",
        "user_id": uid,
        "category": str(category),
        "channels": rng.choices([c for c, _w in CHANNEL_MIX], [w for _c, w in CHANNEL_MIX]),
        "template_id": template_id,
        "params": {"name": "Ann", "ref": str(i)},
        "created_at": now_ms(),
    }
    return codec.encode(codec.REQUEST, req)


def _publish(kafka: KafkaSettings, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = Producer(kafka.producer_config("bench-processor"))
    for uid, value in records:
        while True:
            try:
                producer.produce(topic, value, uid.encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def run(
    requests: int = 100_000,
    users: int = 20_000,
    engine: str = "faust",
    timeout_s: float = 900.0,
    category: str = SEED_MIX,
) -> BenchResult:
    kafka = KafkaSettings(
        bootstrap_servers=os.environ.get("HERALD_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    admin = require_broker(kafka)
    tag = uuid.uuid4().hex[:10]
    try:
        return _run(kafka, admin, tag, requests, users, engine, timeout_s, category)
    finally:
        # The run's topics, and the Faust app's changelogs, go with the run.
        delete_topics(admin, (f"bench.processor.{tag}.", f"bench-processor-{tag}-"))


def _run(
    kafka: KafkaSettings,
    admin: AdminClient,
    tag: str,
    requests: int,
    users: int,
    engine: str,
    timeout_s: float,
    category: str,
) -> BenchResult:
    cassandra_port = int(os.environ.get("HERALD_CASSANDRA__PORT", "9042"))
    kafka_port = int(kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    topic, status = f"bench.processor.{tag}.requested", f"bench.processor.{tag}.status"
    futures = admin.create_topics(
        [NewTopic(topic, 6, 1), NewTopic(status, 3, 1), NewTopic(f"{topic}.dlq", 1, 1)]
    )
    for fut in futures.values():
        fut.result(timeout=30)
    template_id = f"bench.processor.{tag}"
    uids = _seed(users, template_id)
    rng = random.Random(7)
    cold = [(u, _request(tag, i, u, template_id, rng, category)) for i, u in enumerate(uids)]
    warm = [
        (u, _request(tag, users + i, u, template_id, rng, category))
        for i, u in enumerate(rng.choices(uids, k=requests))
    ]
    # The warm phase is published only once every cold request is decided: published
    # together, a partition read ahead would start its warm requests while others still
    # decide cold ones, and each phase's CPU would include some of the other's.
    _publish(kafka, topic, cold)
    warm_sent: threading.Thread | None = None
    cold_ids = {ids.notification_id(f"bench-{tag}-{i}") for i in range(users)}

    consumer = Consumer(
        {
            **kafka.base_config("bench-processor"),
            "group.id": f"bench-{tag}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(status, p, 0) for p in range(3)])
    metrics_port = _free_port()
    env = {
        **os.environ,
        "HERALD_APP_ID": f"bench-processor-{tag}",
        "HERALD_REQUESTED_TOPIC": topic,
        "HERALD_REQUESTED_PRIORITY_TOPIC": "",
        "HERALD_REQUESTED_DLQ_TOPIC": f"{topic}.dlq",
        "HERALD_STATUS_TOPIC": status,
        "HERALD_METRICS_PORT": str(metrics_port),
        "HERALD_DATADIR": str(Path(".run") / "bench-processor" / tag),
        "HERALD_LOG_LEVEL": "WARNING",
        # Warm means warm: no entry may expire mid-phase (users.changes keeps caches fresh).
        "HERALD_CACHE_TTL_S": "3600",
        "HERALD_PROFILE": DEV_PROFILE,
    }
    argv = [sys.executable, "-m", "processors"]
    if engine == "plain":
        argv = [sys.executable, "-m", "herald.bench.processor", "--plain-worker"]
    log_path = Path(".run") / "bench-processor" / f"{tag}-{engine}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = psutil.Process(proc.pid)
    watched = {
        "processor": worker,
        "cassandra": _process(listener_pid(cassandra_port)),
        "kafka": _process(listener_pid(kafka_port)),
    }
    result = BenchResult(engine=engine, users=users)
    phases = {"cold": Phase("cold"), "warm": Phase("warm")}
    done = {"cold": 0, "warm": 0}
    want = {"cold": len(cold), "warm": len(warm)}
    marks: dict[str, dict[str, float]] = {}  # "<phase>-start|end" -> cpu per process, "t"
    decided: set[str] = set()
    peak_rss = 0

    def mark(name: str) -> None:
        marks[name] = {k: cpu_seconds(p) for k, p in watched.items()}
        marks[name]["t"] = time.monotonic()

    deadline = time.monotonic() + timeout_s
    try:
        while sum(done.values()) < users + requests and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"processor exited early; see {log_path}")
            for msg in consumer.consume(2000, timeout=0.2):
                value = msg.value()
                if msg.error() or value is None:
                    continue
                ev = codec.decode(value, codec.STATUS)
                nid = ev["notification_id"]
                # A request's statuses leave together, once it is decided: its first one
                # counts (a capped request may have only per-channel drops, no `accepted`).
                if ev["delivery_id"] is not None or nid in decided:
                    continue
                decided.add(nid)
                phase = "cold" if nid in cold_ids else "warm"
                if done[phase] == 0:
                    mark(f"{phase}-start")
                done[phase] += 1
                if done[phase] == want[phase]:
                    mark(f"{phase}-end")
            if warm_sent is None and done["cold"] == want["cold"]:
                warm_sent = threading.Thread(target=_publish, args=(kafka, topic, warm))
                warm_sent.start()
            with contextlib.suppress(psutil.Error):
                peak_rss = max(peak_rss, worker.memory_info().rss)
        figures = _scrape(metrics_port)
    finally:
        if warm_sent is not None:
            warm_sent.join()
        proc.terminate()
        proc.wait(timeout=30)
        consumer.close()
    for name, ph in phases.items():
        start, end = marks.get(f"{name}-start"), marks.get(f"{name}-end")
        ph.requests = done[name]
        if start is None or end is None or ph.requests < 2:
            continue  # incomplete: reported with its count only
        ph.seconds = round(end["t"] - start["t"], 2)
        ph.requests_per_s = round(ph.requests / max(ph.seconds, 1e-9), 1)
        per = 1e6 / ph.requests
        ph.processor_us = round((end["processor"] - start["processor"]) * per, 1)
        ph.cassandra_us = round((end["cassandra"] - start["cassandra"]) * per, 1)
        ph.kafka_us = round((end["kafka"] - start["kafka"]) * per, 1)
        result.phases.append(ph)
    result.deliveries = int(figures.get("herald_processor_deliveries_total", 0))
    result.peak_rss_mib = round(peak_rss / 2**20, 1)
    result.cache_hit_rate = round(figures.get("herald_processor_cache_hit_rate", 0.0), 3)
    return result


def _process(pid: int | None) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error, TypeError):
        return psutil.Process(pid)
    return None


async def _plain_worker() -> None:
    """The reference engine: the same batches through a bare confluent-kafka loop."""
    from prometheus_client import start_http_server

    settings = ProcessorSettings()
    session = connect(settings.cassandra)
    producer = AsyncProducer(settings.kafka.producer_config("processor"))
    processor = Processor.from_settings(settings, session, producer)
    consumer = Consumer(settings.kafka.consumer_config("processor", settings.app_id))
    consumer.subscribe([settings.requested_topic])
    start_http_server(settings.metrics_port)
    rates: dict[str, object] = {}
    while True:
        msgs = [m for m in consumer.consume(settings.batch_size, 0.1) if not m.error()]
        if not msgs:
            continue
        batch = [
            Incoming(
                m.value() or b"",
                Source(
                    str(m.topic()),
                    int(m.partition() or 0),
                    int(m.offset() or 0),
                    m.key(),
                    {},  # the bench publishes no headers
                ),
            )
            for m in msgs
        ]
        await processor.handle_batch(batch, rates)
        for m in msgs:
            consumer.store_offsets(m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="warm-phase requests")
    parser.add_argument("--users", type=int, default=20_000, help="users (= cold-phase requests)")
    parser.add_argument("--engine", choices=("faust", "plain", "both"), default="both")
    parser.add_argument(
        "--category",
        default=SEED_MIX,
        help="every request's category, or 'seed' for the seed's mix (the default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per engine")
    parser.add_argument("--plain-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker:
        asyncio.run(_plain_worker())
        return
    engines = ("faust", "plain") if args.engine == "both" else (args.engine,)
    for engine in engines:
        result = run(args.requests, args.users, engine, category=args.category)
        if args.json:
            print(json.dumps(asdict(result)))
            continue
        print(
            f"engine {result.engine}: {result.users} users, {result.deliveries} deliveries,"
            f" peak RSS {result.peak_rss_mib} MiB, cache hit rate {result.cache_hit_rate}"
        )
        print(
            f"  {'phase':<6} {'requests':>9} {'s':>7} {'req/s':>8}  CPU µs/request:"
            f" {'processor':>9} {'cassandra':>9} {'kafka':>7}"
        )
        for ph in result.phases:
            print(
                f"  {ph.name:<6} {ph.requests:>9} {ph.seconds:>7} {ph.requests_per_s:>8}"
                f"                  {ph.processor_us:>9} {ph.cassandra_us:>9} {ph.kafka_us:>7}"
            )


if __name__ == "__main__":
    main()
