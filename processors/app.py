"""The Faust application: one agent over the request topic (and one over its priority
lane), the rate-limit and digest tables, the scheduler's releaser and the cache
invalidation reader. The main lane's worker also publishes due digests between batches.

Guarantee: at-least-once (see docs/processor.md). Faust commits a request's offset
only after the agent has finished with it, and the agent finishes only once every
record it produced is acknowledged and the event id is recorded as processed. A crash
in between replays the request, which produces the same records with the same ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, NoReturn, TypeVar, cast

import faust
from confluent_kafka import KafkaException
from faust import streams as faust_streams
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from prometheus_client import start_http_server

from infra.diagnostics import StallWatch
from infra.retry import SERVER_OUTAGES, Backoff, retrying
from infra.scheduling import ScheduleStore, run_releaser
from processors import eager, metrics
from processors.changelog import ChangelogSink, ProducedChangelogTable
from processors.gaps import Gaps, Refetcher, RefetchTimeout
from processors.invalidation import ChangeListener
from processors.pipeline import Incoming, PendingBatch, Processor, Source
from processors.settings import ProcessorSettings

log = logging.getLogger(__name__)

_OUTAGES = SERVER_OUTAGES
T = TypeVar("T")
# Reading skipped records again while Kafka is unavailable: once a second.
_KAFKA_RETRY = Backoff(1.0, 1.0)


def _headers(raw: Any) -> dict[str, bytes]:
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    return {str(k): bytes(v) if v is not None else b"" for k, v in items}


def _incoming(event: faust.types.EventT) -> Incoming:
    msg = event.message
    src = Source(msg.topic, msg.partition, msg.offset, msg.key, _headers(msg.headers))
    return Incoming(msg.value if isinstance(msg.value, bytes) else b"", src, event)


@dataclass
class _InFlight:
    """A batch whose outputs are queued: acked once `task` (its completion) is done."""

    events: list[faust.types.EventT]
    todo: list[Incoming]
    pending: PendingBatch | None
    task: asyncio.Future[None]


def _done() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class _Refetched(faust.Event):
    """A skipped record read again by the worker (processors/gaps.py): Faust never
    delivered it, so it is acked straight to the consumer, not through the stream."""


class _Gone(faust.Event):
    """Skipped offsets that no longer exist (deleted by retention): nothing to decide.
    Reaching it in order, the worker hands the range to Faust as done."""

    def __init__(self, app: faust.App, tp: TP, offsets: range) -> None:
        message = ConsumerMessage(
            tp.topic, tp.partition, offsets.start, 0.0, 0, None, None, None, None, tp=tp
        )
        super().__init__(app, None, None, None, message)
        self.offsets = offsets


def _refetched(app: faust.App, record: Any) -> _Refetched:
    ts_type, ts = record.timestamp()
    tp = TP(record.topic(), record.partition())
    headers = record.headers() or []
    message = ConsumerMessage(
        tp.topic,
        tp.partition,
        record.offset(),
        ts / 1000.0,
        ts_type,
        headers,
        record.key(),
        record.value(),
        None,
        tp=tp,
    )
    return _Refetched(app, record.key(), record.value(), headers, message)


class _App(faust.App):
    # Table writes Faust may hold before its fetch loop waits for them to be produced.
    changelog_buffer = 100  # Faust's own bound; `create_app` sets it from the batch size

    def _new_producer(self) -> Any:
        producer: Any = super()._new_producer()
        # A batch's digest-table writes wait in this buffer until the worker flushes them
        # at the batch's end (the rate-limit table's go through herald's producer). At
        # Faust's 100 its fetch loop stopped for them mid-batch ("producer buffer full",
        # 7 to 9 times per process in a 12,000-request `python -m herald.bench` run, when
        # the rate-limit writes went this way too), a stall the batch's flush makes needless.
        producer.buffer.max_messages = self.changelog_buffer
        return producer

    def _new_consumer(self) -> Any:
        consumer: Any = super()._new_consumer()
        # Faust counts a jump in offsets as done (its "gap"); for herald's request topics a
        # jump is records Faust skipped, which the worker reads again and decides
        # (processors/gaps.py). Only the worker may say an offset is done.
        consumer._faust_add_gap = consumer._add_gap

        async def no_gap(tp: TP, offset_from: int, offset_to: int) -> None:
            return None

        consumer._add_gap = no_gap
        eager.install(consumer)
        return consumer


class _At:
    """Stands in for the current event when a table is written between batches: Faust
    reads the changelog partition from `event.message.partition`."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


def _logging_config(level: str) -> dict[str, Any]:
    """The worker configures logging itself (dictConfig); make it ours: masked JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "infra.logging.JsonFormatter", "service": "processor"}},
        "filters": {"mask": {"()": "infra.logging.MaskingFilter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["mask"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }


def create_app(
    settings: ProcessorSettings, processor: Processor, scheduler: ScheduleStore
) -> faust.App:
    datadir = settings.resolved_datadir()
    datadir.mkdir(parents=True, exist_ok=True)
    app = _App(
        settings.app_id,
        broker=[f"kafka://{h}" for h in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=settings.kafka.faust_credentials(),
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(datadir),
        store="memory://",  # rebuilt from the changelog topic on start
        topic_partitions=settings.requested_partitions,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        producer_acks=-1,
        # The rate-limit table's changelog records, batched and compressed as herald's own.
        producer_linger=settings.kafka.linger_ms / 1000,
        producer_compression_type=(
            None if settings.kafka.compression == "none" else settings.kafka.compression
        ),
        # A killed worker's partitions move on after this long, not the default minute.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 4, 0.5),
        # Our handler writes to stderr; redirected, every line would be logged twice.
        worker_redirect_stdouts=False,
        logging_config=_logging_config(settings.log_level),
    )
    # A few table writes per request at most: a batch's worth is buffered without
    # stopping the fetch loop.
    app.changelog_buffer = max(100, settings.batch_size * 8)
    requests = app.topic(
        settings.requested_topic,
        partitions=settings.requested_partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    # As `app.Table` builds one, with its changelog records produced per batch by herald's
    # producer (processors/changelog.py).
    rates = cast(
        ProducedChangelogTable,
        app.tables.add(
            ProducedChangelogTable(
                app,
                name="rate-limits",
                default=dict,
                beacon=app.tables.beacon,
                partitions=settings.requested_partitions,
                schema=faust.Schema(key_serializer="json", value_serializer="json"),
            )
        ),
    )
    changelog = rates.sink = ChangelogSink(processor.producer)

    async def tables_durable() -> None:
        await changelog.durable()  # the rate-limit table's
        await app.producer.flush()  # the digest table's (Faust's own producer)

    digest_table = app.Table(
        "digests",
        partitions=settings.requested_partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )
    # Keeps the stand-in event of a digest write alive while the table holds a weak ref.
    anchors: list[_At] = []

    def enter(inc: Incoming) -> None:
        # The tables write to the changelog partition of the record being decided.
        faust_streams._current_event.set(weakref.ref(inc.event))

    def enter_partition(partition: int) -> None:
        # Emitting digests happens between batches: no record is current, so a stand-in
        # names the changelog partition (the partition the digest's items came from).
        anchors[:] = [_At(settings.requested_topic, partition)]
        faust_streams._current_event.set(weakref.ref(anchors[0]))  # type: ignore[arg-type]

    def owns(partition: int) -> bool:
        try:
            return TP(settings.requested_topic, partition) in app.consumer.assignment()
        except Exception:  # consumer not started yet
            return False

    async def decide(batch: list[Incoming], lane_digests: Any) -> None:
        """Decide a batch until it is done: an outage is waited out (fail closed; the
        request is fine, and a dead letter would need the same Kafka), and a retry
        produces the same records with the same ids."""
        while True:
            try:
                # The tables' changelogs are flushed before the event ids are recorded
                # (then a redelivered copy is skipped), so before any ack too.
                await processor.handle_batch(
                    batch,
                    rates,
                    enter,
                    lane_digests,
                    tables_durable=tables_durable,
                    tables_send=changelog.send,
                )
                return
            except _OUTAGES as exc:
                metrics.BATCH_RETRIES.inc()
                log.warning(
                    "infrastructure unavailable, retrying the batch",
                    extra={"error": type(exc).__name__, "records": len(batch)},
                )
                await asyncio.sleep(1.0)

    async def emit_digests() -> None:
        """Publish due digests; skipped while partitions move or tables are restored (a
        half-restored entry would be sent short, and its event id then taken)."""
        if app.rebalancing or app.in_recovery:
            return
        while True:
            try:
                await processor.emit_digests(digest_table, owns, enter_partition)
                await app.producer.flush()
                return
            except _OUTAGES as exc:
                metrics.BATCH_RETRIES.inc()
                log.warning(
                    "infrastructure unavailable, retrying digests",
                    extra={"error": type(exc).__name__},
                )
                await asyncio.sleep(1.0)

    def consumer_state(topic: str) -> dict[str, Any]:
        """Faust's view of fetching from `topic`: for a report when requests wait unread."""
        consumer: Any = app.consumer  # its fetch state is not in Faust's interface

        def parts(name: str) -> list[int]:
            return sorted(
                tp.partition for tp in getattr(consumer, name, None) or () if tp.topic == topic
            )

        lag = {}
        for tp in consumer.assignment():
            if tp.topic == topic:
                read = consumer._read_offset.get(tp)
                # Nothing read yet: the next record is the committed one (or the first).
                at = read + 1 if read is not None else consumer._committed_offset.get(tp) or 0
                high = consumer.highwater(tp)
                if high is not None and at < high:
                    lag[tp.partition] = (read, high)
        return {
            "lagging": lag,  # partition → (last offset read, highwater)
            "active": parts("_active_partitions"),
            "paused": parts("_paused_partitions"),
            "buffer_full": parts("_buffered_partitions"),
            "flow_active": consumer.flow_active,
            "flow_control": app.flow_control.is_active(),
            "rebalancing": app.rebalancing,
            "in_recovery": app.in_recovery,
        }

    async def watch_reads(topic: str, last_event: list[float]) -> None:
        """Report requests left unread: partitions with records past the last one read while
        no event has arrived for `stall_report_s` (the worker idle, nothing to decide)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(settings.stall_report_s / 2)
            if loop.time() - last_event[0] < settings.stall_report_s:
                continue
            try:
                state = consumer_state(topic)
            except Exception:  # Faust's internals moved: the report is not worth a crash
                log.debug("consumer state unavailable", exc_info=True)
                continue
            if state["lagging"]:
                log.warning("no progress: requests wait unread", extra={"topic": topic, **state})

    def lane(topic: str, digests_here: bool) -> Any:
        async def process(stream: faust.StreamT[bytes]) -> None:
            await consume(stream, topic, digests_here)

        return process

    async def consume(stream: faust.StreamT[bytes], topic: str, digests_here: bool) -> None:
        """Requests are decided in batches, in the order consumed. A batch is decided
        while up to `pipeline_depth - 1` earlier ones still wait for their acks and dedup
        write; its reads see their event ids as processed (`Processor.pending_marks`).

        herald owns the commit decision: events are acked to Faust only once their whole
        batch is done, batch after batch in consumption order, so Faust's acked offsets per
        partition are always a gap-free prefix and its commit (the end of that prefix) never
        passes an unfinished record. Faust's own gap check is not relied on: it is skipped
        for a new group and off by one otherwise (faust-streaming 0.15).
        """
        manual = cast("faust.Stream[bytes]", stream).noack()
        queue: asyncio.Queue[faust.types.EventT] = asyncio.Queue(settings.batch_size * 2)
        lane_digests = digest_table if digests_here else None
        watch = StallWatch(log, settings.stall_report_s)
        consumer: Any = app.consumer  # _App's: it has the gap hook (`_faust_add_gap`)
        refetcher = Refetcher(settings.kafka, f"{settings.app_id}-refetch")

        async def ack(batch: list[faust.types.EventT]) -> None:
            for event in batch:
                if isinstance(event, _Gone):
                    # Everything before it is acked: the commit may pass the range.
                    offsets = event.offsets
                    await consumer._faust_add_gap(event.message.tp, offsets.start, offsets.stop - 1)
                elif isinstance(event, _Refetched):
                    event.ack()
                else:
                    await manual.ack(event)

        # Batches decided, their outputs queued, completing (acks, dedup write) in order.
        inflight: deque[_InFlight] = deque()

        def stop_worker() -> NoReturn:
            # Not an outage and not one request (both handled in the pipeline): a bug.
            # Acking later batches would leave this batch's offsets as a gap a commit could
            # pass, so the process stops; a restart replays the batch.
            log.critical("batch failed, stopping the worker", exc_info=True)
            os._exit(70)

        async def decide_again(events: list[faust.types.EventT], todo: list[Incoming]) -> None:
            """One batch from scratch, retried through outages, then acked."""
            try:
                if todo:  # else only ranges retention deleted: nothing to decide
                    with watch.busy(f"deciding a batch of {len(events)} requests"):
                        await decide(todo, lane_digests)
            except Exception:
                stop_worker()
            await ack(events)

        async def settle(keep: int) -> None:
            """Ack the oldest batches in order: every finished one, and more (waiting for
            them) until at most `keep` remain. A batch that failed on an outage is decided
            again from scratch, and so is every batch after it (each was decided with its
            ids counting as processed)."""
            while inflight and (len(inflight) > keep or inflight[0].task.done()):
                head = inflight[0]
                try:
                    with watch.busy(f"completing a batch of {len(head.events)} requests"):
                        await asyncio.shield(head.task)
                except _OUTAGES as exc:
                    log.warning(
                        "infrastructure unavailable, deciding the batches in flight again",
                        extra={"error": type(exc).__name__, "batches": len(inflight)},
                    )
                    failed = list(inflight)
                    inflight.clear()
                    await asyncio.gather(*(b.task for b in failed), return_exceptions=True)
                    for b in failed:
                        if b.pending is not None:
                            processor.forget(b.pending)
                    for b in failed:
                        await decide_again(b.events, b.todo)
                    continue
                except Exception:
                    stop_worker()
                inflight.popleft()
                await ack(head.events)

        async def begin(batch: list[faust.types.EventT]) -> None:
            """Decide `batch` and queue its outputs; its completion joins `inflight`."""
            todo = [_incoming(e) for e in batch if not isinstance(e, _Gone)]
            if not todo:
                inflight.append(_InFlight(batch, todo, None, _done()))
                return
            try:
                with watch.busy(f"deciding a batch of {len(batch)} requests"):
                    pending = await processor.prepare_batch(
                        todo, rates, enter, lane_digests, tables_send=changelog.send
                    )
            except _OUTAGES:
                # The batches before it first, then this one, retried until decided.
                await settle(0)
                await decide_again(batch, todo)
                return
            except Exception:
                stop_worker()
            task = asyncio.ensure_future(processor.complete_batch(pending, tables_durable))
            inflight.append(_InFlight(batch, todo, pending, task))

        async def work() -> None:
            loop = asyncio.get_running_loop()
            next_tick = loop.time() + settings.digest_tick_s
            getter: asyncio.Future[faust.types.EventT] | None = None
            while True:
                if lane_digests is not None and loop.time() >= next_tick:
                    # Between batches, in this task: no batch writes the table meanwhile.
                    await settle(0)
                    try:
                        with watch.busy("publishing due digests"):
                            await emit_digests()
                    except Exception:
                        log.critical("digest emission failed, stopping the worker", exc_info=True)
                        os._exit(70)
                    next_tick = loop.time() + settings.digest_tick_s
                # The pending get survives a tick (never cancelled, so no event is lost).
                getter = getter or asyncio.ensure_future(queue.get())
                timeout = max(0.0, next_tick - loop.time()) if lane_digests is not None else None
                waiting: set[asyncio.Future[Any]] = {getter}
                if inflight:
                    waiting.add(inflight[0].task)  # ack it as soon as it completes
                await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    await settle(settings.pipeline_depth)
                    continue
                # Whatever has arrived, up to a batch: no waiting for a batch to fill.
                batch = [getter.result()]
                getter = None
                while len(batch) < settings.batch_size and not queue.empty():
                    batch.append(queue.get_nowait())
                await settle(settings.pipeline_depth - 1)  # room for this one
                await begin(batch)

        async def reading(what: str, tp: TP, op: Callable[[], T]) -> T:
            """`op` in a thread until it succeeds: a Kafka outage is waited out (the
            partition cannot commit past what it reads anyway)."""

            def again(exc: Exception, _delay: float) -> None:
                log.warning(
                    f"{what} unreadable, retrying",
                    extra={"topic": tp.topic, "partition": tp.partition, "error": str(exc)},
                )

            return await retrying(
                lambda: asyncio.to_thread(op),
                _KAFKA_RETRY,
                retriable=lambda exc: isinstance(exc, (RefetchTimeout, KafkaException)),
                on_retry=again,
            )

        async def log_start(tp: TP) -> int:
            return await reading(
                "partition start", tp, lambda: refetcher.log_start(tp.topic, tp.partition)
            )

        async def refill(tp: TP, skipped: range) -> list[faust.types.EventT]:
            """The skipped records read again, in order."""
            got = await reading(
                "skipped records", tp, lambda: refetcher.fetch(tp.topic, tp.partition, skipped)
            )
            events: list[faust.types.EventT] = []
            if got.gone:
                log.warning(
                    "skipped records deleted before they were read again",
                    extra={
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "first": got.gone.start,
                        "last": got.gone.stop - 1,
                    },
                )
                events.append(_Gone(app, tp, got.gone))
            events.extend(_refetched(app, r) for r in got.records)
            metrics.REFETCHED.inc(len(got.records))
            return events

        worker = asyncio.create_task(work())
        last_event = [asyncio.get_running_loop().time()]
        watchers = [
            asyncio.create_task(watch.run(worker)),
            asyncio.create_task(watch_reads(topic, last_event)),
        ]
        gaps = Gaps()
        # The committed offsets are not in Faust's interface: without them (another Faust
        # version), the first record of a partition is simply not checked.
        committed: Any = getattr(app.consumer, "_committed_offset", None)
        try:
            async for event in manual.events():
                last_event[0] = asyncio.get_running_loop().time()
                msg = event.message
                start = committed.get(msg.tp) if committed is not None else None
                if start is None and committed is not None and msg.partition not in gaps.expected:
                    # No committed offset (a new group): reading began at the log's start,
                    # and a record skipped there is as lost as any other.
                    start = await log_start(msg.tp)
                skipped = gaps.check(msg.partition, msg.offset, start)
                if skipped:
                    # Decided before this record, so the acked prefix stays gap-free and
                    # the user's order holds (processors/gaps.py, docs/processor.md).
                    log.warning(
                        "records skipped by the consumer, reading them again",
                        extra={
                            "topic": topic,
                            "partition": msg.partition,
                            "first": skipped.start,
                            "last": skipped.stop - 1,
                        },
                    )
                    metrics.SKIPPED.inc(len(skipped))
                    for again in await refill(msg.tp, skipped):
                        await queue.put(again)
                await queue.put(event)
        finally:
            worker.cancel()
            await asyncio.to_thread(refetcher.close)
            for task in watchers:
                task.cancel()

    app.agent(requests, name="requests")(lane(settings.requested_topic, True))
    if settings.requested_priority_topic:
        # Its own agent, stream and in-flight slots: a backlog of ordinary requests
        # cannot hold back urgent ones (a user's order holds within each lane).
        urgent = app.topic(
            settings.requested_priority_topic,
            partitions=settings.requested_partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        # Urgent requests never wait in a digest: this lane has no digest table.
        app.agent(urgent, name="requests-priority")(lane(settings.requested_priority_topic, False))

    def leads_releases() -> bool:
        # One releaser per group: whoever owns partition 0 of the request topic.
        try:
            return TP(settings.requested_topic, 0) in app.consumer.assignment()
        except Exception:  # consumer not started yet
            return False

    async def publish(user_id: str, payload: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        await processor.producer.produce(
            settings.requested_topic, payload, key=user_id.encode(), headers=headers
        )
        metrics.RELEASED.inc()

    background: set[asyncio.Task[None]] = set()  # referenced, so never collected mid-run

    @app.task
    async def startup() -> None:
        for topic, on_change in (
            (settings.user_changes_topic, processor.enricher.invalidate_user),
            (settings.template_changes_topic, processor.enricher.invalidate_template),
        ):
            listener = ChangeListener(settings.kafka, topic, on_change, asyncio.get_running_loop())
            await asyncio.to_thread(listener.start)
        background.add(
            asyncio.get_running_loop().create_task(
                run_releaser(
                    scheduler,
                    publish,
                    interval_s=settings.scheduler_interval_s,
                    active=leads_releases,
                )
            )
        )
        # Metrics double as the readiness probe: serve them once partitions are assigned.
        for _ in range(300):
            if app.consumer.assignment() and not app.rebalancing:
                break
            await asyncio.sleep(0.1)
        start_http_server(settings.metrics_port)
        log.info("processor ready", extra={"metrics_port": settings.metrics_port})

    return app
