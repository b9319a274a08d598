"""confluent-kafka's idempotent producer, awaited from asyncio.

The processor produces with confluent-kafka rather than Faust's aiokafka producer so
its records are partitioned exactly like every other herald producer's (librdkafka's
partitioner): a user's released and fresh requests share a partition.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

Headers = Sequence[tuple[str, bytes]]

# Errors that no retry can cure: the record itself is refused (too big, malformed).
_PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,
    }
)


def is_permanent(err: KafkaError) -> bool:
    return err.code() in _PERMANENT


class Batch:
    """The records one input batch produces: queued without an await each, then one `wait`.

    Delivery reports arrive on the poll thread; only the last one of a sealed batch wakes the
    event loop, so a batch of any size costs one thread hop, not one per record.
    """

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._lock = threading.Lock()
        self._pending = 0
        self._waiter: asyncio.Future[None] | None = None
        # (tag given to `send`, error) of every record the broker refused.
        self.failed: list[tuple[Hashable, KafkaError]] = []

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: Headers = (),
        tag: Hashable = None,
    ) -> None:
        """Queue one record; raises KafkaException when librdkafka refuses it outright."""
        report = functools.partial(self._report, tag)
        hdrs: list[tuple[str, str | bytes | None]] = list(headers)
        with self._lock:
            self._pending += 1
        try:
            while True:
                try:
                    self._producer.produce(topic, value, key, headers=hdrs, on_delivery=report)
                    return
                except BufferError:  # local queue full: let the poll thread drain acks
                    time.sleep(0.01)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise

    def _report(self, tag: Hashable, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            self._pending -= 1
            if err is not None:
                self.failed.append((tag, err))
            waiter = self._waiter if self._pending == 0 else None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_settle, waiter, None)

    async def wait(self) -> None:
        """Return once every record sent so far is acked or refused (see `failed`)."""
        with self._lock:
            if self._pending == 0:
                return
            self._waiter = self._loop.create_future()
        await self._waiter
        self._waiter = None


class AsyncProducer:
    """`send` queues a record and returns a future settled by the broker's ack."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def batch(self) -> Batch:
        return Batch(self._producer, asyncio.get_running_loop())

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, done, err)

        hdrs: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                self._producer.produce(topic, value, key, headers=hdrs, on_delivery=report)
                return done
            except BufferError:  # local queue full: let acks drain it
                await asyncio.sleep(0.02)

    async def send_and_wait(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()
    ) -> None:
        await (await self.send(topic, value, key=key, headers=headers))

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2)


def _settle(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is not None:
        fut.set_exception(KafkaException(err))
    else:
        fut.set_result(None)
