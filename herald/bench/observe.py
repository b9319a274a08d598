"""Follows a run on Kafka: which requests were decided, which deliveries were fanned out,
and how each delivery ended, by reading the status topic and the channel topics.

It starts at the end offsets taken before the run publishes anything and keeps only the
run's own records (status keys are notification ids, channel keys are user ids), so it can
watch a broker that other clients are using at the same time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from herald.bench.kafkautil import end_offsets
from infra.settings import KafkaSettings
from schemas import codec
from schemas.channels import Channel, Outcome
from schemas.contract import Topics
from schemas.events import to_ms

# Delivery outcomes after which herald will not touch the delivery again.
FINAL_DELIVERY = frozenset({Outcome.SENT, Outcome.FAILED, Outcome.DEAD_LETTERED, Outcome.DROPPED})
REQUEST_LEVEL = frozenset(
    {Outcome.ACCEPTED, Outcome.DROPPED, Outcome.DEFERRED, Outcome.DEAD_LETTERED, Outcome.FAILED}
)


def fanout_topics(prefix: str = "") -> list[str]:
    return [Topics(prefix).channel(ch, priority=p) for ch in Channel for p in (False, True)]


@dataclass
class DeliveryEnd:
    outcome: str
    reason: str | None
    occurred_at: int


@dataclass
class RunState:
    """Everything seen so far; read it under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    decided: dict[str, tuple[str, str | None, int]] = field(default_factory=dict)
    fanned: dict[str, tuple[str, int]] = field(default_factory=dict)  # delivery id → (nid, ts)
    fanned_channel: Counter[str] = field(default_factory=Counter)
    ended: dict[str, DeliveryEnd] = field(default_factory=dict)
    # Notification ids decided or fanned out, kept as they arrive: `progress` is read
    # several times a second, and rebuilding this from the two dicts each time cost the
    # bench more CPU than decoding the records.
    handled: set[str] = field(default_factory=set)
    sent_events: Counter[str] = field(default_factory=Counter)  # delivery id → `sent` events
    outcomes: Counter[str] = field(default_factory=Counter)  # every status event seen
    reasons: Counter[str] = field(default_factory=Counter)  # "outcome:reason" of final events
    last_change: float = field(default_factory=time.monotonic)

    def pending_deliveries(self) -> int:
        return sum(1 for d in self.fanned if d not in self.ended)


class Observer(threading.Thread):
    def __init__(
        self,
        kafka: KafkaSettings,
        notification_ids: set[str],
        user_prefix: str,
        topic_prefix: str = "",
    ) -> None:
        super().__init__(name="bench-observer", daemon=True)
        self.state = RunState()
        self._values = codec.codec_for(kafka.schema_registry_url)
        self._ids = {n.encode() for n in notification_ids}
        self._prefix = user_prefix.encode()
        self._halt = threading.Event()
        self._consumer = Consumer(
            {
                **kafka.base_config("bench-observer"),
                "group.id": f"herald-bench-observer-{time.time_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._status_topic = Topics(topic_prefix).status
        # Pin the start now, before anything is published.
        start: list[TopicPartition] = []
        for topic in [self._status_topic, *fanout_topics(topic_prefix)]:
            start += end_offsets(self._consumer, topic)
        self._consumer.assign(start)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                for msg in self._consumer.consume(num_messages=500, timeout=0.5):
                    value = msg.value()
                    if msg.error() or value is None:
                        continue
                    if msg.topic() == self._status_topic:
                        self._on_status(msg.key(), value)
                    else:
                        self._on_delivery(msg.key(), value, msg.timestamp()[1])
        finally:
            self._consumer.close()

    def _on_status(self, key: bytes | None, value: bytes) -> None:
        if key not in self._ids:
            return
        try:
            ev = self._values.decode(value, codec.STATUS)
        except codec.DecodeError:
            return
        occurred = to_ms(ev["occurred_at"]) or 0  # decoded as a datetime
        s = self.state
        with s.lock:
            s.outcomes[ev["outcome"]] += 1
            did = ev["delivery_id"]
            if did is None:
                if ev["outcome"] in REQUEST_LEVEL:
                    s.decided.setdefault(
                        ev["notification_id"], (ev["outcome"], ev["reason"], occurred)
                    )
                    s.handled.add(ev["notification_id"])
                    if ev["outcome"] != Outcome.ACCEPTED:
                        s.reasons[f"{ev['outcome']}:{ev['reason']}"] += 1
            else:
                if ev["outcome"] == Outcome.SENT:
                    s.sent_events[did] += 1
                if ev["outcome"] in FINAL_DELIVERY and did not in s.ended:
                    s.ended[did] = DeliveryEnd(ev["outcome"], ev["reason"], occurred)
                    if ev["outcome"] != Outcome.SENT:
                        s.reasons[f"{ev['outcome']}:{ev['reason']}"] += 1
            s.last_change = time.monotonic()

    def _on_delivery(self, key: bytes | None, value: bytes, ts: int) -> None:
        if key is None or not key.startswith(self._prefix):
            return
        try:
            d = self._values.decode(value, codec.DELIVERY)
        except codec.DecodeError:
            return
        s = self.state
        with s.lock:
            if d["delivery_id"] not in s.fanned:
                s.fanned[d["delivery_id"]] = (d["notification_id"], ts)
                s.fanned_channel[d["channel"]] += 1
                s.handled.add(d["notification_id"])
            s.last_change = time.monotonic()

    def progress(self) -> tuple[int, int, int]:
        """(requests decided or fanned out, deliveries fanned out, deliveries ended)."""
        s = self.state
        with s.lock:
            return len(s.handled), len(s.fanned), len(s.ended)
