"""Processor throughput on this machine: `python -m processors.bench [--requests N] [--users U]`.

Seeds U users (an iPhone, an Android phone, email and phone each; locales en, ko-KR, de)
and a template per locale and channel, publishes N requests to a private request topic
with the seed's channel mix (push 10 : SMS 1 : email 5), then starts one real processor
process (`python -m processors`) on that topic and times it from its first decision to
its N-th. Prints requests/s, deliveries/s, peak RSS and the cache hit rate; asserts
nothing. Deliveries go to the real channel topics, as in production.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from cassandra.concurrent import execute_concurrent_with_args
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.cassandra import connect
from infra.settings import CassandraSettings, KafkaSettings
from schemas import codec, ids
from schemas.events import now_ms

LOCALES = ("en", "ko-KR", "de")
CHANNEL_MIX = (("push", 10), ("sms", 1), ("email", 5))
_TEXT = {
    "en": ("Hello {{ name }}", "Hi {{ name }}, order {{ ref }} shipped."),
    "ko-KR": ("{{ name }}님", "{{ name }}님, 주문 {{ ref }} 발송."),
    "de": ("Hallo {{ name }}", "Hallo {{ name }}, Bestellung {{ ref }} ist unterwegs."),
}


@dataclass
class BenchResult:
    requests: int
    users: int
    seconds: float
    requests_per_s: float
    deliveries: int
    deliveries_per_s: float
    peak_rss_mib: float
    cache_hit_rate: float


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


def run(requests: int = 10_000, users: int = 2_000, timeout_s: float = 300.0) -> BenchResult:
    kafka = KafkaSettings(
        bootstrap_servers=os.environ.get("HERALD_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    tag = uuid.uuid4().hex[:10]
    topic, status = f"bench.processor.{tag}.requested", f"bench.processor.{tag}.status"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(topic, 6, 1), NewTopic(status, 3, 1), NewTopic(f"{topic}.dlq", 1, 1)]
    )
    for fut in futures.values():
        fut.result(timeout=30)
    template_id = f"bench.processor.{tag}"
    uids = _seed(users, template_id)

    rng = random.Random(7)
    names = [c for c, _w in CHANNEL_MIX]
    weights = [w for _c, w in CHANNEL_MIX]
    producer = Producer(kafka.producer_config("bench-processor"))
    for i in range(requests):
        uid = rng.choice(uids)
        eid = f"bench-{tag}-{i}"
        req = {
            "event_id": eid,
            "notification_id": ids.notification_id(eid),
            "source": "bench",
            "user_id": uid,
            "category": "transactional",
            "channels": rng.choices(names, weights),
            "template_id": template_id,
            "params": {"name": "Ann", "ref": str(i)},
            "created_at": now_ms(),
        }
        while True:
            try:
                producer.produce(topic, codec.encode(codec.REQUEST, req), uid.encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)

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
        "HERALD_REQUESTED_DLQ_TOPIC": f"{topic}.dlq",
        "HERALD_STATUS_TOPIC": status,
        "HERALD_METRICS_PORT": str(metrics_port),
        "HERALD_DATADIR": str(Path(".run") / "bench-processor" / tag),
        "HERALD_LOG_LEVEL": "WARNING",
    }
    log_path = Path(".run") / "bench-processor" / f"{tag}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "processors"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    ps = psutil.Process(proc.pid)
    decided: set[str] = set()
    first = last = 0.0
    peak_rss = 0
    deadline = time.monotonic() + timeout_s
    try:
        while len(decided) < requests and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"processor exited early; see {log_path}")
            for msg in consumer.consume(1000, timeout=0.5):
                value = msg.value()
                if msg.error() or value is None:
                    continue
                ev = codec.decode(value, codec.STATUS)
                if ev["delivery_id"] is None and ev["channel"] is None:
                    decided.add(ev["notification_id"])
                    last = time.monotonic()
                    first = first or last
            peak_rss = max(peak_rss, ps.memory_info().rss)
        figures = _scrape(metrics_port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        consumer.close()
    seconds = max(last - first, 1e-9)
    deliveries = int(figures.get("herald_processor_deliveries_total", 0))
    return BenchResult(
        requests=len(decided),
        users=users,
        seconds=round(seconds, 2),
        requests_per_s=round(len(decided) / seconds, 1),
        deliveries=deliveries,
        deliveries_per_s=round(deliveries / seconds, 1),
        peak_rss_mib=round(peak_rss / 2**20, 1),
        cache_hit_rate=round(figures.get("herald_processor_cache_hit_rate", 0.0), 3),
    )


if __name__ == "__main__":
    from processors.cli import app

    app(["bench", *sys.argv[1:]])
