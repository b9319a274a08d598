"""What a lane does with each fetched record: decode it, keep one user's records in
order, hand it to the delivery handler, and dead-letter what can never be processed.

Each record gets a task; the stored offset only passes it once the task reports the
record finished (`_track`), so a crash re-delivers every record not yet durable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from infra.kafka_producer import refusal
from infra.retry import retrying
from schemas import codec
from schemas.contract import Header, Reason, Topics
from schemas.events import now_ms
from senders import metrics, status
from senders.consumer import TP, LaneConsumer, LaneSpec
from senders.handler import DeliveryHandler
from senders.outputs import DURABLE_BACKOFF, MAX_ATTEMPTS, RecordSink, Stopping
from senders.settings import SenderSettings
from senders.slots import CURRENT, Slots

log = logging.getLogger(__name__)

UNDECODABLE = Reason.UNDECODABLE
# What is kept of a dead letter Kafka refused (too large): enough to review it, and well
# under any topic's size limit; a topic stricter still gets half as much, and so on.
TRUNCATED_BYTES = 64 * 1024


def _order_key(user: bytes | None, delivery: dict[str, Any]) -> bytes | None:
    """What a record keeps its order within: the user and the device (or address)."""
    if not user:
        return None
    target = delivery.get("device_id") or delivery.get("address") or ""
    return user + b"\x00" + str(target).encode()


class LaneDispatch(LaneConsumer):
    """The records of one lane, from fetched to finished."""

    def __init__(
        self,
        spec: LaneSpec,
        *,
        settings: SenderSettings,
        handler: DeliveryHandler,
        publisher: RecordSink,
        slots: Slots,
        stopping: asyncio.Event,
    ) -> None:
        super().__init__(spec, settings=settings, slots=slots, stopping=stopping)
        self.codec = codec.codec_for(settings.kafka.schema_registry_url)
        self.handler = handler
        self.publisher = publisher
        self._last_in_order: dict[bytes, asyncio.Task[None]] = {}

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
            # Records of one user (the key) to one device or address go out in order: each
            # waits for the previous. Copies to a user's other devices do not wait for each
            # other: waiting, a user's third phone got its copy two whole deliveries late
            # (paced at 600 requests/s, the push channels' p99 from fan-out to receipt was
            # 329-332 ms against 137-156 for SMS and email; per device, 159-178).
            order = _order_key(msg.key(), delivery)
            before = self._last_in_order.get(order) if order else None
            self.slots.take()
            work = self._process(delivery, msg, redriven, before)
        else:
            order, work = None, self._poison(msg, reason)
        task = asyncio.create_task(self._track(key, offset, work))
        if order:
            self._last_in_order[order] = task
            task.add_done_callback(functools.partial(self._forget_order, order))
        self._tasks.setdefault(key, set()).add(task)
        task.add_done_callback(self._tasks[key].discard)

    async def _track(self, key: TP, offset: int, work: Any) -> None:
        if await work:
            self._offsets.finish(*key, offset)

    def _forget_order(self, order: bytes, task: asyncio.Task[None]) -> None:
        if self._last_in_order.get(order) is task:
            del self._last_in_order[order]

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
        lease = self.slots.lease()
        try:
            if before is not None:
                await asyncio.wait([before])
            await lease.send()
            CURRENT.set(lease)  # this task's own context: the handler settles it
            return await self._handle(delivery, msg, redriven)
        finally:
            lease.end()

    async def _handle(self, delivery: dict[str, Any], msg: KafkaMessage, redriven: bool) -> bool:
        topic, partition = msg.topic() or "", msg.partition() or 0
        did = delivery.get("delivery_id")

        def again(_exc: Exception, _delay: float) -> None:
            log.exception("delivery not processed; retrying", extra={"delivery_id": did})

        # The ledger makes a second try harmless. Cassandra or Kafka not answering: fail
        # closed, wait however long. Anything else that repeats is a bug or a poison value:
        # dead-lettered rather than stalling the partition.
        try:
            await self._retrying(
                lambda: self.handler.handle(
                    delivery, topic, partition=partition, redriven=redriven
                ),
                again,
                attempts=MAX_ATTEMPTS,
            )
            return True
        except Stopping:
            return False
        except Exception as exc:
            log.exception("delivery failed repeatedly; dead-lettered", extra={"delivery_id": did})
            reason = f"processing_error:{type(exc).__name__}"
            origin = status.origin_topic(delivery, topic, self.settings.topic_prefix)
            return await self._poison(msg, reason, origin)

    async def _retrying(
        self,
        op: Callable[[], Awaitable[object]],
        again: Callable[[Exception, float], None],
        **rule: Any,
    ) -> None:
        """`infra.retry.retrying` with the lane's backoff, and no wait once the process is
        stopping: `Stopping` is raised (the record stays unacknowledged and comes back)."""

        async def pause(delay: float) -> None:
            if self.stopping.is_set():
                raise Stopping
            await asyncio.sleep(delay)

        await retrying(
            op, DURABLE_BACKOFF, on_retry=again, sleep=pause, stop_on=(Stopping,), **rule
        )

    async def _poison(self, msg: KafkaMessage, reason: str, original_topic: str = "") -> bool:
        """A record that cannot be processed: to the DLQ as is, for review."""
        topic = msg.topic() or ""
        original = msg.value() or b""
        value = original
        headers = status.dead_letter_headers(
            reason=reason, attempts=0, original_topic=original_topic or topic
        )
        log.error("unprocessable record dead-lettered", extra={"topic": topic, "reason": reason})

        def again(_exc: Exception, _delay: float) -> None:
            log.exception("dead letter not produced; retrying", extra={"topic": topic})

        while True:
            try:
                # Anything but a refusal is retried for as long as it lasts.
                await self._retrying(
                    functools.partial(
                        self.publisher.produce,
                        Topics(self.settings.topic_prefix).dlq(self.spec.channel),
                        value,
                        key=msg.key(),
                        headers=headers,
                    ),
                    again,
                    retriable=lambda exc: refusal(exc) is None,
                )
                return True
            except Stopping:
                return False
            except Exception as exc:
                refused = refusal(exc)
                assert refused is not None  # `retriable` kept everything else
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
