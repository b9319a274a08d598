"""confluent-kafka's producer, awaited from asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

# Codes with which Kafka refuses the record itself: producing it again can never succeed.
# Listed, not inferred from `KafkaError.retriable()`: an outage's errors (_MSG_TIMED_OUT,
# _TRANSPORT) are not flagged retriable either, and those must be waited out.
_REFUSED = {
    KafkaError.MSG_SIZE_TOO_LARGE: "too_large",
    KafkaError.RECORD_LIST_TOO_LARGE: "too_large",
    KafkaError.INVALID_RECORD: "invalid_record",
}


def refusal(exc: BaseException) -> str | None:
    """Why Kafka refused the record for good (`too_large`, `invalid_record`), or None."""
    if isinstance(exc, KafkaException) and isinstance(err := exc.args[0], KafkaError):
        return _REFUSED.get(err.code())
    return None


class AsyncProducer:
    """Produce and await the broker's ack. A background thread serves delivery reports."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
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
        """Returns once the record is acknowledged (acks=all); raises KafkaException if not."""
        hdrs: list[tuple[str, str | bytes | None]] = [(k, v) for k, v in headers or ()]
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, done, err)

        while True:
            try:
                self._producer.produce(topic, value, key, headers=hdrs, on_delivery=report)
                break
            except BufferError:  # local queue full: wait for acks to drain it
                await asyncio.sleep(0.05)
        await done

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
