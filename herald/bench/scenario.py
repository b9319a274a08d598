"""Building blocks of fault scenarios: a private pipeline with fast retries, request
builders, a publisher that stamps `created_at`, and polling with a deadline.

Retries are shortened so a scenario that exhausts them still ends well inside its budget.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cassandra.cluster import Session
from confluent_kafka import Producer

from herald.bench import load
from herald.bench.oracle import Oracle
from herald.bench.services import Pipeline
from infra import topics
from infra.settings import KafkaSettings
from schemas import codec, ids
from schemas.events import now_ms

FAST_SENDER_ENV = {
    "HERALD_RETRY__DELAYS_S": "[0.5, 1.0, 2.0]",
    "HERALD_RETRY__CLAIM_STALE_AFTER_S": "8",
    "HERALD_SEND_TIMEOUT_S": "3",
    "HERALD_SHUTDOWN_GRACE_S": "5",
    "HERALD_BREAKER__OPEN_FOR_S": "1",
}
LOG_ROOT = Path(".run/faults")
# Fault runs use their own copy of herald's topics: no other herald on the broker takes part.
FAULTS_TOPIC_PREFIX = "herald-faults."


def start_pipeline(
    kafka: KafkaSettings,
    name: str,
    *,
    processors: int = 1,
    senders: int = 1,
    topic_prefix: str = "",
) -> Pipeline:
    """Emulators, processors and senders with fast retries, ready to take requests."""
    run_id = f"{name}-{uuid.uuid4().hex[:6]}"
    pipe = Pipeline(run_id, kafka, LOG_ROOT / run_id, topic_prefix=topic_prefix)
    try:
        pipe.start_emulators()
        for i in range(1, processors + 1):
            pipe.start_processor(i)
        for i in range(1, senders + 1):
            pipe.start_sender(i, env=FAST_SENDER_ENV)
        pipe.wait_ready(processors=processors, senders=senders, timeout=60)
    except BaseException:
        pipe.stop()
        raise
    return pipe


def oracle_for(pipe: Pipeline, session: Session | None = None) -> Oracle:
    """An oracle watching this pipeline's topics and judging by its emulators' ledger."""
    return Oracle(
        pipe.kafka,
        pipe.control_url,
        session=session,
        instance_prefix=pipe.instance_prefix,
        topic_prefix=pipe.topic_prefix,
    )


def make_request(
    user_id: str,
    channel: str,
    *,
    category: str = "transactional",
    params: dict[str, str] | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    event_id = event_id or f"fault-{uuid.uuid4()}"
    record: dict[str, Any] = {
        "event_id": event_id,
        "notification_id": ids.notification_id(event_id),
        "source": "herald.faults",
        "user_id": user_id,
        "category": category,
        "priority": "normal",
        "channels": [channel],
        "template_id": load.template_id(category),
        "params": {"name": "Ada", "ref": "R1"} if params is None else params,
        "content": {},
        "locale": None,
        "send_at": None,
        "expires_at": None,
        "collapse_key": None,
        "trace_id": None,
        "metadata": {},
        "created_at": 0,
    }
    record.update(fields)
    return record


def mixed_requests(users: Sequence[load.User], n: int) -> list[dict[str, Any]]:
    """n requests over the users, cycling push, email and SMS."""
    channels = ("push", "email", "push", "sms")
    return [
        make_request(users[i % len(users)].user_id, channels[i % len(channels)]) for i in range(n)
    ]


class RequestFeed:
    """Publishes notification requests for a fault scenario (raw bytes too)."""

    def __init__(self, kafka: KafkaSettings, topic: str = topics.REQUESTED) -> None:
        self.producer = Producer(kafka.producer_config("faults"))
        self.values = codec.codec_for(kafka.schema_registry_url)
        self.topic = topic

    def send(self, records: Sequence[dict[str, Any]], *, rate: float = 0.0) -> None:
        interval = 1.0 / rate if rate else 0.0
        for r in records:
            r["created_at"] = now_ms()
            self.raw(r["user_id"].encode(), self.values.encode(codec.REQUEST, r, topic=self.topic))
            if interval:
                self.producer.poll(0)
                time.sleep(interval)
        self.flush()

    def raw(self, key: bytes, value: bytes) -> None:
        self.producer.produce(self.topic, key=key, value=value)

    def flush(self) -> None:
        assert self.producer.flush(60) == 0, "requests not acknowledged by Kafka"
