"""Reading what the pipeline did with the batch: the status events of this run."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from herald.demo.report import console
from infra import topics
from infra.settings import KafkaSettings
from schemas import codec

TERMINAL = {"sent", "failed", "dead_lettered", "dropped", "deferred", "token_invalidated"}


@contextlib.contextmanager
def status_reader(kafka: KafkaSettings) -> Iterator[Consumer]:
    """Reads notifications.status from its current end, so only this run's events show."""
    consumer = Consumer(kafka.consumer_config("demo", f"herald-demo-{uuid.uuid4().hex[:8]}"))
    meta = consumer.list_topics(topics.STATUS, timeout=10).topics[topics.STATUS]
    consumer.assign([TopicPartition(topics.STATUS, p, OFFSET_END) for p in meta.partitions])
    consumer.poll(0.5)  # resolves the end offsets before anything is published
    try:
        yield consumer
    finally:
        consumer.close()


def collect(
    consumer: Consumer,
    values: codec.Codec,
    expected: set[str],
    timeout: float,
    *,
    digests: tuple[str, int] = ("", 0),
) -> list[dict[str, Any]]:
    """Status events of the expected notifications until every one has settled, and of
    the digests the processor sends for this run (`digests`: their event id prefix and how
    many are expected to be accepted)."""
    prefix, wanted = digests
    events: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    with console.status("waiting for the pipeline…") as spinner:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() is not None:
                event = values.decode(msg.value() or b"", codec.STATUS)
                ours = event["notification_id"] in expected or (
                    wanted and event["event_id"].startswith(prefix)
                )
                # status ids are deterministic: a repeat is the same event seen again
                if ours and event["status_id"] not in seen_ids:
                    seen_ids.add(event["status_id"])
                    events.append(event)
                    last_new = time.monotonic()
            seen = {e["notification_id"] for e in events}
            sent = {
                e["notification_id"]
                for e in events
                if wanted and e["event_id"].startswith(prefix) and e["outcome"] in TERMINAL
            }
            spinner.update(f"waiting for the pipeline… {len(events)} status events")
            # Settled: every request has an outcome and nothing new arrived for a while.
            if seen >= expected and len(sent) >= wanted and time.monotonic() - last_new > 4.0:
                break
    return events
