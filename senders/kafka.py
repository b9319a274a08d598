"""confluent-kafka's producer, awaited from asyncio."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from infra.retry import refusal as refusal


class _Acks:
    """Records produced together share one wake-up: the poll thread settles `done` when the
    last of them is acked, not once per record."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pending = 0
        self.refused: dict[int, KafkaError] = {}
        self.done: asyncio.Future[None] = loop.create_future()


class AsyncProducer:
    """Produce and await the broker's ack (acks=all), one event-loop wake-up per group of
    records in flight together. A background thread serves delivery reports."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self._acks: _Acks | None = None
        self._sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Returns once the record is acknowledged; raises KafkaException if refused."""
        hdrs: list[tuple[str, str | bytes | None]] = [(k, v) for k, v in headers or ()]
        with self._lock:
            acks = self._acks
            if acks is None:
                acks = self._acks = _Acks(asyncio.get_running_loop())
            acks.pending += 1
            self._sent += 1
            tag = self._sent
        report = functools.partial(self._report, acks, tag)
        try:
            while True:
                try:
                    self._producer.produce(topic, value, key, headers=hdrs, on_delivery=report)
                    break
                except BufferError:  # local queue full: wait for acks to drain it
                    await asyncio.sleep(0.05)
        except BaseException:  # refused outright: nothing in flight to wait for
            self._report(acks, tag, None, None)
            raise
        await asyncio.shield(acks.done)
        if (err := acks.refused.get(tag)) is not None:
            raise KafkaException(err)

    def _report(self, acks: _Acks, tag: int, err: KafkaError | None, _msg: Message | None) -> None:
        with self._lock:
            # Sealed at its first report, so a steady stream of records cannot keep a
            # group open (and its first records waiting) forever.
            if self._acks is acks:
                self._acks = None
            acks.pending -= 1
            if err is not None:
                acks.refused[tag] = err
            if acks.pending > 0:
                return
        acks.done.get_loop().call_soon_threadsafe(_settle, acks.done)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
