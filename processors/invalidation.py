"""Drop cached rows when `users.changes` (key: user id) or `templates.changes` (key:
template id) says they changed: one listener per topic.

Every processor instance must see every change, whichever request partitions it owns, so
this reader assigns itself all partitions (no consumer group membership) and starts at
the end: older changes are already reflected in Cassandra and the cache starts empty.
The record key names what changed; the value (a UserChange, ...) is not needed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from infra.settings import KafkaSettings

log = logging.getLogger(__name__)


class ChangeListener:
    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        on_change: Callable[[str], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._consumer = Consumer(
            {
                **kafka.base_config("processor-cache"),
                "group.id": "herald-processor-cache",  # required by the client, never joined
                "enable.auto.commit": False,
            }
        )
        self._topic = topic
        self._on_change = on_change
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"changes:{topic}", daemon=True)

    def start(self) -> None:
        meta = self._consumer.list_topics(self._topic, timeout=10)
        parts = meta.topics[self._topic].partitions
        self._consumer.assign([TopicPartition(self._topic, p, OFFSET_END) for p in parts])
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                log.warning(
                    "changes read error", extra={"topic": self._topic, "error": str(msg.error())}
                )
                continue
            key = msg.key()
            if key:
                self._loop.call_soon_threadsafe(self._on_change, key.decode("utf-8", "replace"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._consumer.close()
