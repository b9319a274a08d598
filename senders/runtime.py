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

A lane in three layers: `senders.consumer` (topics, consumer, group callbacks, offsets),
`senders.dispatch` (each record to the handler or the DLQ), and `Lane.run` here (the
fetch loop and shutdown); `senders.slots` is the in-flight bound they share.
"""

from __future__ import annotations

import asyncio
import contextlib

from confluent_kafka import KafkaException

from schemas.channels import Channel
from senders.consumer import lanes_for
from senders.dispatch import LaneDispatch
from senders.handler import DeliveryHandler
from senders.outputs import RecordSink
from senders.settings import SenderSettings
from senders.slots import Slots


class Lane(LaneDispatch):
    """One lane: fetch as many records as there are free slots, dispatch them, store the
    offsets they finished; at shutdown, wait for the records in flight and commit."""

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
        publisher: RecordSink,
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


__all__ = ["Lane", "SenderRuntime", "parse_channels"]
