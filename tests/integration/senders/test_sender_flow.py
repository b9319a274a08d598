"""Flow control on the real Kafka: bounded in-flight, paused partitions, the priority lane."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from infra.settings import CassandraSettings, KafkaSettings
from schemas.channels import Channel
from senders.providers.base import Message, Provider, SendResult
from senders.runtime import SenderRuntime
from senders.service import sender
from senders.settings import SenderSettings
from tests.conftest import CASSANDRA_PORT, KAFKA
from tests.integration.senders.conftest import PREFIX, make_delivery
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MAX_IN_FLIGHT = 4  # the main lane may use 3: one slot is the priority lane's reserve


class Gated(Provider):
    """Holds every send until the gate opens; tracks how many are in the provider at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channels = frozenset({"email"})
        self.gate = asyncio.Event()
        self.inside: set[str] = set()
        self.peak = 0
        self.sent: list[str] = []

    async def send(self, message: Message) -> SendResult:
        self.inside.add(message.delivery_id)
        self.peak = max(self.peak, len(self.inside))
        try:
            await self.gate.wait()
        finally:
            self.inside.discard(message.delivery_id)
        self.sent.append(message.delivery_id)
        return SendResult(self.name, None)


@pytest.fixture(scope="module")
async def gated() -> AsyncIterator[tuple[SenderRuntime, Gated]]:
    settings = SenderSettings(
        kafka=KafkaSettings(bootstrap_servers=KAFKA),
        cassandra=CassandraSettings(port=CASSANDRA_PORT),
        group_prefix=f"test-sender-flow-{uuid.uuid4().hex[:8]}",
        start_at="latest",
        topic_prefix=PREFIX,
        session_timeout_ms=6000,
        max_in_flight=MAX_IN_FLIGHT,
        metrics_enabled=False,
    )
    smtp = Gated("smtp")
    providers = {"smtp": smtp, "sendgrid": Gated("sendgrid")}
    async with sender(settings, [Channel.EMAIL], providers=providers) as rt:
        task = asyncio.create_task(rt.run())
        async with asyncio.timeout(60):
            await rt.wait_ready()
        yield rt, smtp
        smtp.gate.set()
        rt.stop()
        await asyncio.wait_for(task, 30)


async def test_in_flight_is_bounded_and_priority_overtakes_the_backlog(
    gated: tuple[SenderRuntime, Gated], produce: Any
) -> None:
    rt, smtp = gated
    backlog = [make_delivery("email", address="someone@example.com") for _ in range(12)]
    for d in backlog:
        produce("notifications.email", d)
    await asyncio.to_thread(wait_for, lambda: len(smtp.inside) == MAX_IN_FLIGHT - 1, 20, "busy")
    main = next(lane for lane in rt.lanes if lane.spec.name == "main")
    await asyncio.to_thread(wait_for, lambda: main._full_paused, 5, "main lane paused")
    await asyncio.sleep(0.5)  # give an unbounded consumer the chance to over-fetch
    assert len(smtp.inside) == MAX_IN_FLIGHT - 1
    assert rt.slots.used <= MAX_IN_FLIGHT

    urgent = make_delivery("email", address="someone@example.com", priority="high")
    produce("notifications.email.priority", urgent)
    await asyncio.to_thread(
        wait_for, lambda: urgent["delivery_id"] in smtp.inside, 10, "priority sent past backlog"
    )

    smtp.gate.set()
    wanted = {d["delivery_id"] for d in backlog} | {urgent["delivery_id"]}
    await asyncio.to_thread(
        wait_for,
        lambda: wanted <= set(smtp.sent),
        30,
        lambda: (
            f"all sent (missing {len(wanted - set(smtp.sent))}, in flight {rt.slots.used}, "
            f"paused {[(lane.spec.name, lane._full_paused) for lane in rt.lanes]})"
        ),
    )
    assert smtp.peak <= MAX_IN_FLIGHT
    assert len(smtp.sent) == len(set(smtp.sent))
