"""confluent-kafka's producer, awaited from asyncio: the one asyncio producer of herald.

Every stage produces through `AsyncProducer` (the processor, the senders, the send API's
`AsyncPublisher`, the tracking service): librdkafka's partitioner for every record (a
user's records share a partition whoever produced them), one poll thread per producer
serving delivery reports, and as few event-loop wake-ups as the caller allows:

- `produce(...)`: await one record's ack; records produced together share one wake-up
  (the group is settled when its last report arrives);
- `batch()`: queue many records without an await each, then one `wait()` (the processor's
  fan-out of a whole input batch);
- `submit(...)`: a future per record that carries the broker's `Message` (partition and
  offset), for callers that report them.

Errors: `refusal(exc)` / `is_permanent(err)` say when Kafka refused the record itself
(too large, malformed): producing it again can never succeed, unlike an outage.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

# Header values as confluent-kafka takes them (a null value is allowed).
Headers = Sequence[tuple[str, str | bytes | None]]

# librdkafka's RD_KAFKA_PARTITION_UA: the configured partitioner picks.
_ANY_PARTITION = -1

# Codes with which Kafka refuses the record itself, and the reason herald records. Listed,
# not inferred from `KafkaError.retriable()`: an outage's errors (_MSG_TIMED_OUT,
# _TRANSPORT) are not flagged retriable either, and those must be waited out.
_REFUSED = {
    KafkaError.MSG_SIZE_TOO_LARGE: "too_large",
    KafkaError.RECORD_LIST_TOO_LARGE: "too_large",
    KafkaError.INVALID_MSG_SIZE: "too_large",
    KafkaError.INVALID_RECORD: "invalid_record",
    KafkaError.INVALID_MSG: "invalid_record",
}


def is_permanent(err: KafkaError) -> bool:
    """Kafka refused this record for good: no retry can cure it."""
    return err.code() in _REFUSED


def refusal(exc: BaseException) -> str | None:
    """Why Kafka refused the record for good (`too_large`, `invalid_record`), or None."""
    if isinstance(exc, KafkaException) and isinstance(err := exc.args[0], KafkaError):
        return _REFUSED.get(err.code())
    return None


def _header_list(headers: Headers | None) -> list[tuple[str, str | bytes | None]] | None:
    # None for no headers: most records have none, and librdkafka takes None as is.
    return [(k, v) for k, v in headers] if headers else None


class _Group:
    """Records produced together share one wake-up: once the last of them is acked, the
    poll thread makes one hop to the event loop, which answers every caller's future.
    A future per caller (not one shared and shielded): a caller that is cancelled cancels
    only its own, at the cost of nothing more than the future."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending = 0
        self.refused: dict[int, KafkaError] = {}
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def wake(self) -> None:
        """On the event loop, once every record of the group is answered."""
        for tag, fut in self.waiters:
            if fut.done():  # its caller was cancelled
                continue
            if (err := self.refused.get(tag)) is not None:
                fut.set_exception(KafkaException(err))
            else:
                fut.set_result(None)


class Batch:
    """The records one input batch produces: queued without an await each, then one `wait`.

    Delivery reports arrive on the poll thread; only the last one of a sealed batch wakes the
    event loop, so a batch of any size costs one thread hop, not one per record. No lock per
    record: the caller's thread alone counts what it sent, the poll thread alone what was
    answered; the lock only hands over the waiter (a lock per record contended with the poll
    thread on every delivery report).
    """

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._lock = threading.Lock()
        self._sent = 0  # written by the caller's thread only
        self._answered = 0  # written by the poll thread only
        self._waiter: asyncio.Future[None] | None = None
        # (tag given to `send`, error) of every record the broker refused.
        self.failed: list[tuple[Hashable, KafkaError]] = []
        self._untagged = functools.partial(self._report, None)  # one for every such record

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: Headers = (),
        tag: Hashable = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record (to `partition`, else the partitioner's); raises KafkaException
        when librdkafka refuses it outright."""
        report = self._untagged if tag is None else functools.partial(self._report, tag)
        hdrs = _header_list(headers)
        part = _ANY_PARTITION if partition is None else partition
        # Counted before it is queued: its report may arrive before `produce` returns.
        self._sent += 1
        try:
            while True:
                try:
                    self._producer.produce(
                        topic, value, key, part, headers=hdrs, on_delivery=report
                    )
                    return
                except BufferError:  # local queue full: let the poll thread drain acks
                    time.sleep(0.01)
        except BaseException:
            self._sent -= 1
            raise

    def _report(self, tag: Hashable, err: KafkaError | None, _msg: Message | None) -> None:
        if err is not None:
            self.failed.append((tag, err))
        self._answered += 1
        if self._answered == self._sent:
            with self._lock:
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                self._loop.call_soon_threadsafe(_settle, waiter, None)

    async def wait(self) -> None:
        """Return once every record sent so far is acked or refused (see `failed`)."""
        with self._lock:
            if self._answered == self._sent:
                return
            waiter = self._waiter = self._loop.create_future()
        await waiter


class AsyncProducer:
    """A librdkafka producer and the thread that serves its delivery reports."""

    def __init__(
        self, config: dict[str, Any] | None = None, *, producer: Producer | None = None
    ) -> None:
        if producer is None:
            if config is None:
                raise ValueError("give a producer config or a producer")
            producer = Producer(config)
        self.producer: Producer = producer
        self._lock = threading.Lock()
        self._group: _Group | None = None
        self._sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    # -- one record, its ack shared with the records produced alongside ---------------------

    async def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Returns once the record is acknowledged; raises KafkaException if refused."""
        hdrs = _header_list(headers)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._lock:
            group = self._group
            if group is None:
                group = self._group = _Group(loop)
            group.pending += 1
            self._sent += 1
            tag = self._sent
            group.waiters.append((tag, done))
        report = functools.partial(self._group_report, group, tag)
        try:
            while True:
                try:
                    self.producer.produce(topic, value, key, headers=hdrs, on_delivery=report)
                    break
                except BufferError:  # local queue full: wait for acks to drain it
                    await asyncio.sleep(0.05)
        except BaseException:  # refused outright: nothing in flight to wait for
            done.cancel()  # not answered by the group: this caller raises now
            self._group_report(group, tag, None, None)
            raise
        await done  # raises KafkaException if the broker refused the record

    def _group_report(
        self, group: _Group, tag: int, err: KafkaError | None, _msg: Message | None
    ) -> None:
        with self._lock:
            # Sealed at its first report, so a steady stream of records cannot keep a
            # group open (and its first records waiting) forever.
            if self._group is group:
                self._group = None
            group.pending -= 1
            if err is not None:
                group.refused[tag] = err
            if group.pending > 0:
                return
        group.loop.call_soon_threadsafe(group.wake)

    # -- many records, one wait --------------------------------------------------------------

    def batch(self) -> Batch:
        return Batch(self.producer, asyncio.get_running_loop())

    # -- one record, its own future with the broker's answer ---------------------------------

    async def submit(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: Headers | None = None,
    ) -> asyncio.Future[tuple[KafkaError | None, Message | None]]:
        """Queue one record; the future gives (error, message) once the broker answered."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[KafkaError | None, Message | None]] = loop.create_future()

        def report(err: KafkaError | None, msg: Message | None) -> None:
            loop.call_soon_threadsafe(_answer, done, (err, msg))

        hdrs = _header_list(headers)
        while True:
            try:
                self.producer.produce(topic, value, key, headers=hdrs, on_delivery=report)
                return done
            except BufferError:  # local queue full: let acks drain it
                await asyncio.sleep(0.02)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for every queued record; returns how many are still undelivered."""
        return int(self.producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        self.producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2)


def _settle(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is not None:
        fut.set_exception(KafkaException(err))
    else:
        fut.set_result(None)


def _answer(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)
