"""A lane's Kafka side: which topics it reads, its consumer and the group callbacks.

librdkafka calls the assign/revoke/lost callbacks on the consumer's own thread (inside
`consume`); each hops to the event loop and waits there, so a revoke can wait for the
revoked partitions' records in flight and commit what they finished. Fetching, pausing
and storing offsets run on that one thread too (`_call`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from infra.retry import Backoff, is_outage, retrying_blocking
from schemas.channels import Channel
from schemas.contract import Topics
from schemas.events import now_ms
from senders import metrics
from senders.offsets import OffsetTracker
from senders.settings import SenderSettings
from senders.slots import Slots

log = logging.getLogger(__name__)

TP = tuple[str, int]

_START_BACKOFF = Backoff(first_s=0.2, max_s=2.0)


@dataclass(frozen=True)
class LaneSpec:
    channel: Channel
    name: str  # main | priority | retry
    topics: list[str]
    delayed: bool = False  # records carry not_before
    reserve: int = 0  # in-flight slots this lane leaves to others


def lanes_for(channel: Channel, max_in_flight: int, prefix: str = "") -> list[LaneSpec]:
    reserve = max(1, max_in_flight // 8) if max_in_flight > 1 else 0
    return [
        LaneSpec(channel, "main", [Topics(prefix).channel(channel)], reserve=reserve),
        LaneSpec(channel, "priority", [Topics(prefix).channel(channel, priority=True)]),
        LaneSpec(
            channel,
            "retry",
            Topics(prefix).retries(channel),
            delayed=True,
        ),
    ]


class LaneConsumer:
    """The consumer of one lane and the partitions it holds; `Lane` adds the records."""

    def __init__(
        self,
        spec: LaneSpec,
        *,
        settings: SenderSettings,
        slots: Slots,
        stopping: asyncio.Event,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.slots = slots
        self.stopping = stopping
        self.ready = asyncio.Event()  # set once the group gave this lane an assignment
        self._client = f"sender-{spec.channel}-{spec.name}"
        config = settings.kafka.consumer_config(self._client, settings.group_id(spec.channel))
        config["auto.offset.reset"] = settings.start_at
        config["partition.assignment.strategy"] = "cooperative-sticky"
        config["session.timeout.ms"] = settings.session_timeout_ms
        config["heartbeat.interval.ms"] = max(500, settings.session_timeout_ms // 5)
        # Bounds what librdkafka fetches ahead per consumer while the lane waits for slots.
        config["queued.max.messages.kbytes"] = settings.prefetch_kbytes
        config["fetch.max.bytes"] = settings.prefetch_kbytes * 1024
        self._consumer = Consumer(config)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._client)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._assigned: set[TP] = set()
        # Records being processed, per partition: a revoke waits for them.
        self._tasks: dict[TP, set[asyncio.Task[None]]] = {}
        self._offsets = OffsetTracker()
        self._held: dict[TP, float] = {}  # delayed lane: partition → due (epoch seconds)
        self._full_paused = False
        self._labels = (str(spec.channel), spec.name)

    # -- consumer thread -------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    def _start_at_end(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A fresh group starts at the end *now*, not at the first fetch, so a record
        produced right after the assignment is never skipped; and that start is committed
        at once, so a rebalance before the first commit cannot move it on."""
        committed = consumer.committed(partitions, timeout=10)
        fresh = []
        for tp, c in zip(partitions, committed, strict=True):
            if c.offset == OFFSET_INVALID:
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                tp.offset = high
                fresh.append(TopicPartition(tp.topic, tp.partition, high))
        if fresh:
            consumer.commit(offsets=fresh, asynchronous=False)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.settings.start_at == "latest" and partitions:
            # Never let an error out of this callback: librdkafka hands it back from
            # `consume` as a bare KafkaError that kills the consumer thread, and the lane
            # would wait on that thread for ever. A partition without a leader yet (a topic
            # just created) is waited out like any outage.
            def on_retry(exc: Exception, delay: float) -> None:
                log.warning(
                    "cannot read where a new group starts, retrying",
                    extra={"lane": self._client, "error": str(exc), "retry_in_s": delay},
                )

            try:
                retrying_blocking(
                    lambda: self._start_at_end(consumer, partitions),
                    _START_BACKOFF,
                    retriable=lambda exc: is_outage(exc) and not self.stopping.is_set(),
                    on_retry=on_retry,
                )
            except Exception:
                # Stopping, or not an outage: the partitions are still taken, starting at
                # the end as of the first fetch (`auto.offset.reset`).
                log.exception("start of a new group not fixed", extra={"lane": self._client})
        # Cooperative rebalancing: only the partitions that move are revoked and assigned;
        # the others keep flowing while a sender joins or leaves.
        consumer.incremental_assign(partitions)
        if self._full_paused:  # the lane is holding back: the new partitions wait too
            consumer.pause(partitions)
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._assigned_now(partitions), self._loop).result()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        offsets = asyncio.run_coroutine_threadsafe(
            self._revoked_now(partitions, drain=True), self._loop
        ).result()
        if offsets:
            try:
                consumer.store_offsets(offsets=offsets)
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("commit on revoke failed", extra={"error": str(exc)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(
            self._revoked_now(partitions, drain=False), self._loop
        ).result()

    # -- event loop ------------------------------------------------------------------

    async def _assigned_now(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._assigned.add(key)
            self._offsets.forget(*key)
        metrics.ASSIGNED.labels(*self._labels).set(len(self._assigned))
        self.ready.set()

    async def _revoked_now(
        self, partitions: list[TopicPartition], *, drain: bool
    ) -> list[TopicPartition]:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if drain:
            running = [t for k in keys for t in self._tasks.get(k, ())]
            if running:
                await asyncio.wait(running, timeout=self.settings.shutdown_grace_s)
        offsets = [
            TopicPartition(t, p, o) for t, p, o in self._offsets.to_store() if (t, p) in keys
        ]
        for key in keys:
            self._assigned.discard(key)
            self._offsets.forget(*key)
            self._held.pop(key, None)
        metrics.ASSIGNED.labels(*self._labels).set(len(self._assigned))
        metrics.PAUSED.labels(*self._labels).set(len(self._held))
        return offsets

    def _fetch(self, batch: int) -> list[KafkaMessage]:
        """Up to `batch` records, returning as soon as one is there: `consume(n, t)` alone
        waits for all n or for t, which caps a lane at n records per t."""
        first: list[KafkaMessage] = self._consumer.consume(1, 0.2)
        if not first or batch == 1:
            return first
        return first + self._consumer.consume(batch - 1, 0)

    async def _flow_control(self) -> None:
        now = now_ms() / 1000
        due = [k for k, at in self._held.items() if at <= now]
        if due:
            for k in due:
                del self._held[k]
            if not self._full_paused:
                await self._call(self._consumer.resume, [TopicPartition(*k) for k in due])
            metrics.PAUSED.labels(*self._labels).set(len(self._held))
        if self._full_paused and self.slots.free(self.spec.reserve) > 0:
            await self._pause_all(False)

    async def _pause_all(self, pause: bool) -> None:
        parts = [TopicPartition(*k) for k in self._assigned if k not in self._held]
        if parts:
            await self._call(self._consumer.pause if pause else self._consumer.resume, parts)
        self._full_paused = pause

    async def _store(self) -> None:
        offsets = [o for o in self._offsets.to_store() if o[:2] in self._assigned]
        if not offsets:
            return
        try:
            await self._call(
                self._consumer.store_offsets, None, [TopicPartition(*o) for o in offsets]
            )
        except KafkaException as exc:  # e.g. revoked between the check and the call
            log.warning("store_offsets failed", extra={"error": str(exc)})
            return
        for t, p, o in offsets:
            self._offsets.stored(t, p, o)
