"""A device a provider rejected is out of the fan-out at once, not after the processor's
cache expires: the sender deletes it and publishes the change on users.changes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from infra.kafka_producer import AsyncProducer
from infra.settings import KafkaSettings
from senders.handler import DeliveryHandler
from senders.ledger import CassandraLedger, State
from senders.providers.base import Message, PermanentError, Provider, SendResult
from senders.settings import SenderSettings
from tests.conftest import KAFKA
from tests.integration.processors.prockit import Harness
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Unregistered(Provider):
    name = "apns"
    channels = frozenset({"push.ios"})

    async def send(self, message: Message) -> SendResult:
        raise PermanentError(
            "apns:410 Unregistered", provider=self.name, status=410, invalid_address=True
        )


async def reject(proc: Harness, delivery: dict[str, Any]) -> str:
    """What a sender does with `delivery` when APNs answers 410."""
    settings = SenderSettings(kafka=KafkaSettings(bootstrap_servers=KAFKA), metrics_enabled=False)
    producer = AsyncProducer(settings.kafka.producer_config("test-token-removal"))
    handler = DeliveryHandler(
        settings=settings,
        ledger=CassandraLedger(proc.session),
        publisher=producer,
        providers={"apns": Unregistered()},
        owner="test-token-removal",
    )
    try:
        # Under a delivery id of its own: a sender running on the shared channel topics
        # may be handling the original.
        return await handler.handle(
            {**delivery, "delivery_id": str(uuid.uuid4())},
            "notifications.push.ios",
            partition=0,  # any index: the claim is under a delivery id of its own
        )
    finally:
        producer.close()


def test_a_request_a_second_after_a_410_does_not_reach_the_removed_device(
    proc: Harness,
) -> None:
    uid = proc.user(email=None, phone=None, devices=(("iphone", "ios"),))
    first = proc.publish(proc.request(uid, channels=["push"]))
    [(_, delivery)] = wait_for(lambda: proc.watcher.delivered(first), what="first fan-out")

    assert asyncio.run(reject(proc, delivery)) == State.FAILED
    time.sleep(1.0)
    second = proc.publish(proc.request(uid, channels=["push"]))

    decided = wait_for(lambda: proc.watcher.outcomes(second), what="second request decided")
    assert decided == [("dropped", "no_device", "push")]
    assert proc.watcher.delivered(second) == []
