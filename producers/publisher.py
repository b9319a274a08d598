"""The producer library: how an upstream service puts a notification request on Kafka.

    with Publisher(KafkaSettings()) as pub:
        result = pub.publish(NotificationRequest(source="billing", user_id="u-1",
                                                 category="transactional", template_id="receipt"))

`publish` validates first (a `ValidationError` naming the field, nothing produced), then
produces to `notifications.requested` keyed by user id (per-user order) with the idempotent
producer (`enable.idempotence`, `acks=all`), and returns once the broker has the record
(`PublishResult` with partition and offset) or raises `PublishError` whose `retriable`
says whether publishing the *same* request again may succeed. Retrying with the same
`event_id` is always safe: the processor drops a repeated event id.

`AsyncPublisher` is the same for asyncio code, on herald's one asyncio producer
(`infra.kafka_producer`): one poll thread serves delivery reports into asyncio futures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer

from infra import topics
from infra.kafka_producer import AsyncProducer
from infra.settings import KafkaSettings
from producers.request import DEFAULT_MAX_PAYLOAD_BYTES, NotificationRequest, validate_request
from schemas import codec as avro
from schemas.channels import MANDATORY_CATEGORIES, Priority
from schemas.errors import HeraldError
from schemas.validation import ValidationError

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class PublishResult:
    """Where a record landed, or why it did not (`error`, and whether to retry)."""

    event_id: str
    notification_id: str
    topic: str
    partition: int = -1
    offset: int = -1
    error: str | None = None
    retriable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class PublishError(HeraldError, RuntimeError):
    """The broker did not take the record. `retriable`: the same request may succeed later."""

    def __init__(self, message: str, *, retriable: bool, event_id: str | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.event_id = event_id


def _prefixed(err: ValidationError, index: int) -> ValidationError:
    return ValidationError(f"[{index}].{err.field}", err.message)


@dataclass(frozen=True)
class Prepared:
    """A validated, encoded request ready to produce."""

    event_id: str
    notification_id: str
    key: bytes
    value: bytes
    topic: str


class _Base:
    """Validation, encoding and producing shared by the blocking and asyncio APIs.
    `producer` and `codec` are for tests and special configurations."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        client: str = "producer",
        topic: str = topics.REQUESTED,
        priority_lane: bool = True,
        changes_topic: str = topics.USER_CHANGES,
        template_changes_topic: str = topics.TEMPLATE_CHANGES,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        codec: avro.Codec | None = None,
        producer: Producer | None = None,
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.topic = topic
        # `<request topic>.priority`: notifications.requested.priority, prefixed or not.
        self.priority_topic = f"{topic}.priority" if priority_lane else None
        self.changes_topic = changes_topic
        self.template_changes_topic = template_changes_topic
        self.max_payload_bytes = max_payload_bytes
        self.codec = codec or avro.codec_for(self.kafka.schema_registry_url)
        self.producer = producer or Producer(self.kafka.producer_config(client))

    def topic_for(self, request: NotificationRequest) -> str:
        """Urgent requests (high priority, or a category users cannot opt out of) take the
        priority lane, so a marketing backlog on the main request topic cannot delay them."""
        urgent = request.priority == Priority.HIGH or request.category in MANDATORY_CATEGORIES
        return self.priority_topic if urgent and self.priority_topic else self.topic

    def prepare(self, request: NotificationRequest) -> Prepared:
        """Validate and encode; raises `ValidationError` naming the field."""
        data = validate_request(request, max_payload_bytes=self.max_payload_bytes)
        topic = self.topic_for(request)
        if not isinstance(self.codec, avro.SingleObjectCodec):
            data = self.codec.encode(avro.REQUEST, request.to_avro(), topic=topic)
        key = request.user_id.encode()
        return Prepared(request.event_id, request.notification_id, key, data, topic)

    def prepare_all(self, requests: Sequence[NotificationRequest]) -> list[Prepared]:
        """All or nothing: one invalid request rejects the batch (field `[i].<name>`)."""
        out = []
        for i, req in enumerate(requests):
            try:
                out.append(self.prepare(req))
            except ValidationError as err:
                raise _prefixed(err, i) from None
        return out

    def encode_change(self, user_id: str, kind: str) -> bytes:
        record = {"user_id": user_id, "kind": kind, "changed_at": datetime.now(UTC)}
        return self.codec.encode(avro.USER_CHANGE, record, topic=self.changes_topic)

    def _produce(
        self, topic: str, key: bytes, value: bytes, headers: Headers | None, on_delivery: Any
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room, then try again.
                self.producer.poll(0.05)


def _result(p: Prepared, err: KafkaError | None, msg: Message | None, topic: str) -> PublishResult:
    if err is not None:
        return PublishResult(
            p.event_id, p.notification_id, topic, error=err.str(), retriable=err.retriable()
        )
    assert msg is not None
    return PublishResult(
        p.event_id, p.notification_id, msg.topic() or topic, msg.partition() or 0, msg.offset() or 0
    )


class Publisher(_Base):
    """Blocking producer API. Thread-safe; one per process is plenty."""

    def publish(
        self,
        request: NotificationRequest,
        *,
        headers: Headers | None = None,
        timeout: float = 30.0,
    ) -> PublishResult:
        result = self._send([self.prepare(request)], headers, timeout)[0]
        if not result.ok:
            raise PublishError(
                result.error or "not delivered",
                retriable=result.retriable,
                event_id=result.event_id,
            )
        return result

    def publish_batch(
        self,
        requests: Sequence[NotificationRequest],
        *,
        headers: Headers | None = None,
        timeout: float = 30.0,
    ) -> list[PublishResult]:
        """Validate every request, produce them all, wait for every delivery report.
        Results are in request order; a record the broker refused has `error` set."""
        return self._send(self.prepare_all(requests), headers, timeout)

    def _send(
        self, prepared: list[Prepared], headers: Headers | None, timeout: float
    ) -> list[PublishResult]:
        results: list[PublishResult | None] = [None] * len(prepared)

        def reporter(i: int) -> Any:
            def report(err: KafkaError | None, msg: Message) -> None:
                results[i] = _result(prepared[i], err, msg, prepared[i].topic)

            return report

        for i, p in enumerate(prepared):
            self._produce(p.topic, p.key, p.value, headers, reporter(i))
        self._wait(lambda: all(r is not None for r in results), timeout)
        return [
            r
            or PublishResult(
                p.event_id, p.notification_id, p.topic, error="timed out", retriable=True
            )
            for p, r in zip(prepared, results, strict=True)
        ]

    def _wait(self, finished: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not finished() and time.monotonic() < deadline:
            self.producer.poll(0.05)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every queued record; returns how many are still undelivered."""
        return int(self.producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPublisher(_Base):
    """asyncio producer API. Start with `async with AsyncPublisher(...)` (or `start()`);
    `close()` flushes what is queued before returning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async: AsyncProducer | None = None

    def start(self) -> None:
        """Start serving delivery reports (herald's one asyncio producer, its poll thread)."""
        if self._async is None:
            self._async = AsyncProducer(producer=self.producer)

    async def _submit(
        self, topic: str, key: bytes, value: bytes, headers: Headers | None
    ) -> asyncio.Future[tuple[KafkaError | None, Message | None]]:
        self.start()
        assert self._async is not None
        return await self._async.submit(topic, value, key=key, headers=headers)

    async def publish(
        self, request: NotificationRequest, *, headers: Headers | None = None
    ) -> PublishResult:
        p = self.prepare(request)
        err, msg = await (await self._submit(p.topic, p.key, p.value, headers))
        result = _result(p, err, msg, p.topic)
        if not result.ok:
            raise PublishError(
                result.error or "not delivered", retriable=result.retriable, event_id=p.event_id
            )
        return result

    async def publish_batch(
        self, requests: Sequence[NotificationRequest], *, headers: Headers | None = None
    ) -> list[PublishResult]:
        return await self.publish_prepared(self.prepare_all(requests), headers=headers)

    async def publish_prepared(
        self, prepared: Sequence[Prepared], *, headers: Headers | None = None
    ) -> list[PublishResult]:
        """Produce requests already checked by `prepare` (callers that validate early)."""
        futures = [await self._submit(p.topic, p.key, p.value, headers) for p in prepared]
        reports = await asyncio.gather(*futures)
        return [
            _result(p, err, msg, p.topic) for p, (err, msg) in zip(prepared, reports, strict=True)
        ]

    async def publish_change(self, user_id: str, kind: str) -> None:
        err, _ = await (
            await self._submit(
                self.changes_topic, user_id.encode(), self.encode_change(user_id, kind), None
            )
        )
        if err is not None:
            raise PublishError(err.str(), retriable=err.retriable())

    async def publish_template_change(self, template_id: str, version: int, kind: str) -> None:
        record = {
            "template_id": template_id,
            "version": version,
            "kind": kind,
            "changed_at": datetime.now(UTC),
        }
        value = self.codec.encode(avro.TEMPLATE_CHANGE, record, topic=self.template_changes_topic)
        err, _ = await (
            await self._submit(self.template_changes_topic, template_id.encode(), value, None)
        )
        if err is not None:
            raise PublishError(err.str(), retriable=err.retriable())

    async def publish_status(self, topic: str, event: Mapping[str, Any]) -> None:
        """One `herald.StatusEvent` (key = notification id), acknowledged by Kafka."""
        value = self.codec.encode(avro.STATUS, event, topic=topic)
        err, _ = await (await self._submit(topic, event["notification_id"].encode(), value, None))
        if err is not None:
            raise PublishError(err.str(), retriable=err.retriable())

    async def close(self, flush_timeout: float = 30.0) -> None:
        if self._async is not None:
            await asyncio.to_thread(self._async.close, flush_timeout)
            self._async = None
        else:
            await asyncio.to_thread(self.producer.flush, flush_timeout)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
