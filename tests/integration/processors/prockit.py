"""Helpers: a real processor process on a private request topic, and a watcher of what it writes.

Each module gets its own request, dead-letter and status topics and consumer group, so
runs in parallel with other tests (or a demo) never see each other's requests. The
channel topics are the shared ones: the watcher keeps only records of users it made.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cassandra.cluster import Session
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from herald.bench.kafkautil import delete_topics
from herald.services import Service, ServiceSpec, free_port, python_module, start
from infra import topics
from infra.cassandra import connect
from infra.settings import DEV_PROFILE
from schemas import codec, ids
from schemas.channels import Channel
from schemas.events import now_ms
from tests.conftest import CASSANDRA_PORT, CASSANDRA_SETTINGS, KAFKA
from tests.support import wait_for

PARTITIONS = 6
LOG_DIR = Path(".run") / "test-logs" / "processors"


def census(
    h: Harness, nids: list[str], *, expect: tuple[str, str | None, str | None], deliveries: int
) -> tuple[list[str], list[str]]:
    """(lost, doubled): requests with no outcome; requests whose outcomes are anything but
    `expect` or whose distinct delivery ids are not `deliveries` (a replay that writes the
    same ids again is one outcome, not two)."""
    lost, doubled = [], []
    # A request's status and its delivery are produced together but read from two topics:
    # wait (a while) until the watcher has caught up on both, so a lagging read of the
    # channel topic is not taken for a missing or extra delivery.
    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: all(
                not h.watcher.outcomes(nid)
                or len({d["delivery_id"] for _t, d in h.watcher.delivered(nid)}) >= deliveries
                for nid in nids
            ),
            timeout=30,
            what="the deliveries of every decided request",
        )
    for nid in nids:
        outcomes = set(h.watcher.outcomes(nid))
        if not outcomes:
            lost.append(nid)
        elif outcomes != {expect} or (
            len({d["delivery_id"] for _t, d in h.watcher.delivered(nid)}) != deliveries
        ):
            doubled.append(nid)
    return lost, doubled


def create_topics(names: list[str], partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": KAFKA})
    for fut in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        fut.result(timeout=30)


def delete_topics_of(tag: str) -> None:
    """Drop every topic a harness made, its own and Faust's (changelogs, repartitions):
    thousands of leftovers slow the shared broker's start and inflate its CPU."""
    delete_topics(
        AdminClient({"bootstrap.servers": KAFKA}),
        (f"test.processor.{tag}.", f"test-processor-{tag}-"),
    )


def device_token(platform: str) -> str:
    """A well-formed token: APNs 64 hex digits, FCM `<instance id>:<base64url>`."""
    if platform == "ios":
        return uuid.uuid4().hex * 2
    return f"inst{uuid.uuid4().hex[:8]}:{uuid.uuid4().hex}{uuid.uuid4().hex}"


@dataclass
class Watcher:
    """Reads the status, dead-letter and channel topics from now on, in a thread."""

    status_topic: str
    dlq_topic: str
    users: set[str] = field(default_factory=set)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    deliveries: dict[str, list[tuple[str, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    dead: list[tuple[bytes | None, bytes, dict[str, bytes]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": KAFKA,
                "group.id": f"test-watch-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        names = [self.status_topic, self.dlq_topic]
        for ch in Channel:
            names += [topics.channel_topic(ch), topics.channel_topic(ch, priority=True)]
        # Topics created a moment ago may not be in the metadata yet.
        meta = wait_for(
            lambda: (
                (m := self._consumer.list_topics(timeout=10))
                and all(n in m.topics and m.topics[n].partitions for n in names)
                and m
            ),
            timeout=30,
            what="new topics in the metadata",
        )
        assignment = []
        for name in names:
            for p in meta.topics[name].partitions:
                high = wait_for(
                    functools.partial(self._end_offset, TopicPartition(name, p)),
                    timeout=30,
                    what=f"a leader for {name}:{p}",
                )
                assignment.append(TopicPartition(name, p, high - 1))
        self._consumer.assign(assignment)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _end_offset(self, tp: TopicPartition) -> int | None:
        """The partition's end (+1, so 0 is truthy), or None while it has no leader yet."""
        try:
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            return None
        return int(high) + 1

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, timeout=0.2):
                if msg.error():
                    continue
                topic, value = msg.topic(), msg.value()
                with self.lock:
                    if topic == self.dlq_topic:
                        self.dead.append((msg.key(), value, dict(msg.headers() or [])))
                    elif topic == self.status_topic:
                        ev = codec.decode(value, codec.STATUS)
                        self.statuses[ev["notification_id"]].append(ev)
                    elif msg.key() is not None and msg.key().decode() in self.users:
                        d = codec.decode(value, codec.DELIVERY)
                        self.deliveries[d["notification_id"]].append((topic, d))

    def outcomes(self, nid: str) -> list[tuple[str, str | None, str | None]]:
        with self.lock:
            return [(e["outcome"], e["reason"], e["channel"]) for e in self.statuses.get(nid, [])]

    def delivered(self, nid: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.deliveries.get(nid, []))

    def dead_letters(self, key: bytes) -> list[dict[str, bytes]]:
        with self.lock:
            return [h for k, _v, h in self.dead if k == key]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


@dataclass
class Harness:
    session: Session
    producer: Producer
    watcher: Watcher
    topic: str
    env: dict[str, str]
    metrics_port: int
    service: Service | None = None
    module: str = "processors"  # the entry point; a test may wrap it (skipping.py)

    def start(self) -> Service:
        self.service = start(
            ServiceSpec(
                name=f"processor-{self.topic}",
                argv=python_module(self.module),
                ready_port=self.metrics_port,
                env=self.env,
            ),
            LOG_DIR,
            timeout=60,
        )
        return self.service

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def progress(self) -> str:
        """For a timeout's message: per partition of the request topic, the processor's
        committed offset against the end, and the processor's own decision counters."""
        consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": self.env["HERALD_APP_ID"]})
        try:
            parts = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            offsets = {
                tp.partition: f"{tp.offset}/{consumer.get_watermark_offsets(tp, timeout=10)[1]}"
                for tp in consumer.committed(tps, timeout=10)
            }
        finally:
            consumer.close()
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as r:
                counters = [
                    line
                    for line in r.read().decode().splitlines()
                    if line.startswith(
                        ("herald_processor_requests_total", "herald_processor_decisions_total")
                    )
                ]
        except OSError as exc:
            counters = [f"metrics unavailable: {exc}"]
        return f"committed/end per partition {offsets}; processor counters {counters}"

    def kill(self) -> None:
        if self.service is not None:
            self.service.kill()
            self.service = None

    def user(
        self,
        *,
        email: str | None = "user@example.com",
        phone: str | None = "+14155550123",
        devices: tuple[tuple[str, str], ...] = (),
        locale: str | None = "en",
        timezone: str = "UTC",
        quiet: tuple[int, int] | None = None,
        unsubscribed_all: bool = False,
        opt_outs: tuple[tuple[str, str], ...] = (),
    ) -> str:
        uid = f"it-{uuid.uuid4().hex}"
        self.session.execute(
            "INSERT INTO users (user_id, email, phone, locale, timezone, quiet_start, quiet_end,"
            " unsubscribed_all) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (uid, email, phone, locale, timezone, *(quiet or (None, None)), unsubscribed_all),
        )
        for device_id, platform in devices:
            self.session.execute(
                "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
                " VALUES (%s, %s, %s, %s)",
                (uid, device_id, platform, device_token(platform)),
            )
        for channel, category in opt_outs:
            self.session.execute(
                "INSERT INTO preferences (user_id, channel, category, opt_in)"
                " VALUES (%s, %s, %s, false)",
                (uid, channel, category),
            )
        with self.watcher.lock:
            self.watcher.users.add(uid)
        return uid

    def request(self, user_id: str, **fields: Any) -> dict[str, Any]:
        eid = fields.pop("event_id", None) or f"evt-{uuid.uuid4().hex}"
        content = {
            "push": {"title": "Hello", "subject": None, "body": "push body", "html": None},
            "sms": {"title": None, "subject": None, "body": "sms body", "html": None},
            "email": {"title": None, "subject": "Subj", "body": "text", "html": "<p>hi</p>"},
        }
        return {
            "event_id": eid,
            "notification_id": ids.notification_id(eid),
            "source": "it",
            "user_id": user_id,
            "category": "transactional",
            "content": content,
            "created_at": now_ms(),
            **fields,
        }

    def publish(self, req: dict[str, Any], headers: list[tuple[str, bytes]] | None = None) -> str:
        self.publish_raw(req["user_id"].encode(), codec.encode(codec.REQUEST, req), headers=headers)
        return str(req["notification_id"])

    def publish_raw(
        self, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.producer.produce(self.topic, value, key, headers=headers or [])
        self.producer.flush(10)


def make_harness(
    extra_env: dict[str, str] | None = None,
) -> Iterator[Harness]:
    tag = uuid.uuid4().hex[:10]
    topic = f"test.processor.{tag}.requested"
    dlq, status = f"{topic}.dlq", f"test.processor.{tag}.status"
    create_topics([topic, f"{topic}.priority"])
    create_topics([dlq, status], partitions=1)
    metrics_port = free_port()
    env = {
        "HERALD_APP_ID": f"test-processor-{tag}",
        "HERALD_REQUESTED_TOPIC": topic,
        "HERALD_REQUESTED_PRIORITY_TOPIC": f"{topic}.priority",
        "HERALD_REQUESTED_DLQ_TOPIC": dlq,
        "HERALD_STATUS_TOPIC": status,
        "HERALD_METRICS_PORT": str(metrics_port),
        "HERALD_DATADIR": str(Path(".run") / "test-processor" / tag),
        "HERALD_SCHEDULER_INTERVAL_S": "0.2",
        "HERALD_SESSION_TIMEOUT_S": "6",
        "HERALD_PROFILE": DEV_PROFILE,
        **(extra_env or {}),
    }
    session = connect(CASSANDRA_SETTINGS)
    watcher = Watcher(status, dlq)
    producer = Producer({"bootstrap.servers": KAFKA, "enable.idempotence": True, "linger.ms": 2})
    harness = Harness(session, producer, watcher, topic, env, metrics_port)
    try:
        yield harness
    finally:
        harness.stop()
        watcher.close()
        producer.flush(5)
        session.cluster.shutdown()
        delete_topics_of(tag)


class Proxy:
    """Forwards 127.0.0.1:<port> to Cassandra; `cut()` drops everything until `restore()`."""

    def __init__(self, target: int = CASSANDRA_PORT) -> None:
        self.port = free_port()
        self.target = target
        self.up = threading.Event()
        self.up.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._server.close()
