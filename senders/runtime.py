"""The sender process: Kafka lanes per channel feeding the delivery handler.

Per channel, three consumers in the channel's group (`herald-sender-<channel>`):

- `main`: the channel topic;
- `priority`: the `.priority` topic, with its own consumer so it never waits behind the
  main backlog, and a reserve of in-flight slots the main lane cannot take;
- `retry`: the retry tiers. A record not yet due pauses its partition (and is re-fetched
  from there on resume): nothing sleeps and nothing is buffered while waiting.

A lane fetches a batch (up to its free in-flight slots) and gives each record a task:
the batch's provider calls run concurrently, and its ledger writes and Kafka acks are
shared round trips (`senders.ledger`, `infra.kafka_producer`). The stored offset, once per
batch, is the lowest one whose outcome is not durable yet (`OffsetTracker`). When the
process-wide in-flight limit is reached, a lane pauses its partitions rather than
fetching more.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from infra.kafka_producer import refusal
from schemas import codec
from schemas.channels import Channel
from schemas.contract import Header, Reason, Topics
from schemas.events import now_ms
from senders import metrics, status
from senders.handler import MAX_ATTEMPTS, DeliveryHandler, Publisher, Stopping, is_outage
from senders.offsets import OffsetTracker
from senders.settings import SenderSettings

log = logging.getLogger(__name__)

TP = tuple[str, int]
UNDECODABLE = Reason.UNDECODABLE
# What is kept of a dead letter Kafka refused (too large): enough to review it, and well
# under any topic's size limit; a topic stricter still gets half as much, and so on.
TRUNCATED_BYTES = 64 * 1024


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


class Slots:
    """Process-wide bound on deliveries in flight, shared by every lane."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # records taken from Kafka and not finished
        self._sem = asyncio.Semaphore(limit)
        self._freed = asyncio.Event()

    def free(self, reserve: int = 0) -> int:
        return max(0, self.limit - reserve - self.used)

    def take(self) -> None:
        self.used += 1
        metrics.IN_FLIGHT.set(self.used)

    def give(self) -> None:
        self.used -= 1
        metrics.IN_FLIGHT.set(self.used)
        self._freed.set()

    async def wait_free(self, reserve: int, within: float) -> bool:
        """True once a slot is free for a lane leaving `reserve`; False after `within` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.free(reserve) == 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), remaining)
        return True

    @property
    def sending(self) -> asyncio.Semaphore:
        """Held while a record is being processed: never more than `limit` at once."""
        return self._sem


class Lane:
    def __init__(
        self,
        spec: LaneSpec,
        *,
        settings: SenderSettings,
        handler: DeliveryHandler,
        publisher: Publisher,
        slots: Slots,
        stopping: asyncio.Event,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.codec = codec.codec_for(settings.kafka.schema_registry_url)
        self.handler = handler
        self.publisher = publisher
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
        self._tasks: dict[TP, set[asyncio.Task[None]]] = {}
        self._last_of_user: dict[bytes, asyncio.Task[None]] = {}
        self._offsets = OffsetTracker()
        self._held: dict[TP, float] = {}  # delayed lane: partition → due (epoch seconds)
        self._full_paused = False
        self._labels = (str(spec.channel), spec.name)

    # -- consumer thread -------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.settings.start_at == "latest" and partitions:
            # A fresh group starts at the end *now*, not at the first fetch, so a record
            # produced right after the assignment is never skipped; and that start is
            # committed at once, so a rebalance before the first commit cannot move it on.
            committed = consumer.committed(partitions, timeout=10)
            fresh = []
            for tp, c in zip(partitions, committed, strict=True):
                if c.offset == OFFSET_INVALID:
                    _, high = consumer.get_watermark_offsets(tp, timeout=10)
                    tp.offset = high
                    fresh.append(TopicPartition(tp.topic, tp.partition, high))
            if fresh:
                consumer.commit(offsets=fresh, asynchronous=False)
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

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer.subscribe(
            self.spec.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self.stopping.is_set():
                await self._flow_control()
                if self.slots.free(self.spec.reserve) == 0 and not self._full_paused:
                    # Full. Briefly: wait for a slot, keeping what librdkafka prefetched
                    # (bounded by `prefetch_kbytes`; a pause would drop it and cost a fetch
                    # round trip). Longer, e.g. a slow provider: pause the partitions.
                    if not await self.slots.wait_free(
                        self.spec.reserve, self.settings.pause_after_s
                    ):
                        await self._pause_all(True)
                    continue
                batch = max(1, self.slots.free(self.spec.reserve))
                messages = await self._call(self._fetch, batch)
                for msg in messages:
                    await self._dispatch(msg)
                await self._store()
            await self._shutdown()
        finally:
            await self._call(self._consumer.close)
            self._executor.shutdown(wait=False)

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

    async def _dispatch(self, msg: KafkaMessage) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": str(err)})
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        key = (topic, partition)
        if key in self._held or key not in self._assigned:
            return  # a held partition is fetched again from the held record once it is due
        value = msg.value() or b""
        try:
            delivery: dict[str, Any] | None = self.codec.decode(value, expect=codec.DELIVERY)
        except codec.DecodeError as exc:
            delivery, reason = None, f"{UNDECODABLE}:{exc.reason}"
        if delivery is not None and delivery.get("channel") != self.spec.channel:
            # Routed by its own channel field it could reach a provider this topic never
            # uses; it is a producer bug, not a delivery.
            delivery, reason = None, "wrong_channel"
        if delivery is not None and self.spec.delayed:
            not_before = delivery.get("not_before")
            nb_ms = (
                not_before
                if isinstance(not_before, int) or not_before is None
                else int(not_before.timestamp() * 1000)
            )
            if nb_ms is not None and nb_ms > now_ms():
                self._held[key] = nb_ms / 1000
                tp = TopicPartition(topic, partition, offset)
                await self._call(self._consumer.pause, [tp])
                await self._call(self._consumer.seek, tp)
                metrics.PAUSED.labels(*self._labels).set(len(self._held))
                return
        self._offsets.start(topic, partition, offset)
        if delivery is not None:
            redriven = any(h[0] == Header.REDRIVEN_FROM for h in msg.headers() or ())
            # Records of one user (the key) go out in order: each waits for the previous.
            user = msg.key()
            before = self._last_of_user.get(user) if user else None
            self.slots.take()
            work = self._process(delivery, msg, redriven, before)
        else:
            user, work = None, self._poison(msg, reason)
        task = asyncio.create_task(self._track(key, offset, work))
        if user:
            self._last_of_user[user] = task
            task.add_done_callback(functools.partial(self._forget_user, user))
        self._tasks.setdefault(key, set()).add(task)
        task.add_done_callback(self._tasks[key].discard)

    async def _track(self, key: TP, offset: int, work: Any) -> None:
        if await work:
            self._offsets.finish(*key, offset)

    def _forget_user(self, user: bytes, task: asyncio.Task[None]) -> None:
        if self._last_of_user.get(user) is task:
            del self._last_of_user[user]

    async def _process(
        self,
        delivery: dict[str, Any],
        msg: KafkaMessage,
        redriven: bool,
        before: asyncio.Task[None] | None,
    ) -> bool:
        # Counted (since dispatch) while waiting for the user's previous record, so a burst
        # for one user stops the fetching instead of piling up tasks; the semaphore is
        # taken only after that wait, so waiting records never starve those they wait for.
        try:
            if before is not None:
                await asyncio.wait([before])
            async with self.slots.sending:
                return await self._handle(delivery, msg, redriven)
        finally:
            self.slots.give()

    async def _handle(self, delivery: dict[str, Any], msg: KafkaMessage, redriven: bool) -> bool:
        topic, partition = msg.topic() or "", msg.partition() or 0
        delay = 0.2
        failures = 0
        while True:
            try:
                await self.handler.handle(delivery, topic, partition=partition, redriven=redriven)
                return True
            except Stopping:
                return False
            except Exception as exc:
                # The ledger makes a second try harmless. Cassandra or Kafka not answering:
                # fail closed, wait however long. Anything else that repeats is a bug or a
                # poison value: dead-lettered rather than stalling the partition.
                if not is_outage(exc):
                    failures += 1
                    if failures >= MAX_ATTEMPTS:
                        log.exception(
                            "delivery failed repeatedly; dead-lettered",
                            extra={"delivery_id": delivery.get("delivery_id")},
                        )
                        reason = f"processing_error:{type(exc).__name__}"
                        origin = status.origin_topic(delivery, topic, self.settings.topic_prefix)
                        return await self._poison(msg, reason, origin)
                log.exception(
                    "delivery not processed; retrying",
                    extra={"delivery_id": delivery.get("delivery_id")},
                )
                if self.stopping.is_set():
                    return False
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

    async def _poison(self, msg: KafkaMessage, reason: str, original_topic: str = "") -> bool:
        """A record that cannot be processed: to the DLQ as is, for review."""
        topic = msg.topic() or ""
        original = msg.value() or b""
        value = original
        headers = status.dead_letter_headers(
            reason=reason, attempts=0, original_topic=original_topic or topic
        )
        log.error("unprocessable record dead-lettered", extra={"topic": topic, "reason": reason})
        delay = 0.2
        while True:
            try:
                await self.publisher.produce(
                    Topics(self.settings.topic_prefix).dlq(self.spec.channel),
                    value,
                    key=msg.key(),
                    headers=headers,
                )
                return True
            except Exception as exc:
                refused = refusal(exc)
                if refused is not None:
                    if not value:
                        # Refused with nothing left to cut: it stays only in its own topic.
                        log.error(
                            "dead letter refused by Kafka; given up",
                            extra={"topic": topic, "reason": refused},
                        )
                        return True
                    # Sending it again can never succeed: a truncated copy that says why.
                    value = original[: min(TRUNCATED_BYTES, len(value) // 2)]
                    headers = (
                        *status.dead_letter_headers(
                            reason=refused,
                            attempts=0,
                            original_topic=original_topic or topic,
                            first_error=reason,
                            last_error=exc.args[0].name(),
                        ),
                        (Header.TRUNCATED_FROM, str(len(original)).encode()),
                    )
                    continue
                log.exception("dead letter not produced; retrying", extra={"topic": topic})
                if self.stopping.is_set():
                    return False
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

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

    async def _shutdown(self) -> None:
        running = [t for ts in self._tasks.values() for t in ts]
        if running:
            await asyncio.wait(running, timeout=self.settings.shutdown_grace_s)
        await self._store()
        with contextlib.suppress(KafkaException):  # nothing stored since the last commit
            await self._call(lambda: self._consumer.commit(asynchronous=False))


class SenderRuntime:
    """Everything one `python -m senders run` process runs."""

    def __init__(
        self,
        settings: SenderSettings,
        channels: list[Channel],
        *,
        handler: DeliveryHandler,
        publisher: Publisher,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.stopping = handler.stopping
        self.slots = Slots(settings.max_in_flight)
        self.lanes = [
            Lane(
                spec,
                settings=settings,
                handler=handler,
                publisher=publisher,
                slots=self.slots,
                stopping=self.stopping,
            )
            for ch in channels
            for spec in lanes_for(ch, settings.max_in_flight, settings.topic_prefix)
        ]

    def stop(self) -> None:
        self.stopping.set()

    async def wait_ready(self) -> None:
        """Every lane has its first assignment (bound it with asyncio.timeout)."""
        await asyncio.gather(*(lane.ready.wait() for lane in self.lanes))

    async def run(self) -> None:
        """Until `stop()`. A lane that fails stops the others gracefully, then re-raises:
        the process exits non-zero and its partitions move to the other senders."""
        tasks = [asyncio.create_task(lane.run(), name=lane._client) for lane in self.lanes]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in done if t.exception() is not None]
        if failed:
            self.stop()
            await asyncio.wait(tasks)
            raise failed[0].exception()  # type: ignore[misc]


def parse_channels(values: list[str]) -> list[Channel]:
    out: list[Channel] = []
    for v in values:
        chans = list(Channel) if v == "all" else [Channel(v)]
        out.extend(c for c in chans if c not in out)
    return out


__all__ = ["Lane", "LaneSpec", "SenderRuntime", "Slots", "lanes_for", "parse_channels"]
