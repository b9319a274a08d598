"""confluent-kafka's idempotent producer, awaited from asyncio.

The processor produces with confluent-kafka rather than Faust's aiokafka producer so
its records are partitioned exactly like every other herald producer's (librdkafka's
partitioner): a user's released and fresh requests share a partition.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

Headers = Sequence[tuple[str, bytes]]


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
