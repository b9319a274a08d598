"""The in-flight bound: a record holds a sending slot until its claim is over, then a
publishing slot while its outcome's records are produced and acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from senders.ledger import State
from senders.slots import CURRENT, Slots
from tests.unit.senders.fakes import MemoryPublisher, delivery
from tests.unit.senders.test_runtime_handler import World


async def test_a_lease_moves_from_sending_to_publishing_and_gives_everything_back() -> None:
    slots = Slots(2)
    slots.take()
    lease = slots.lease()
    await lease.send()
    assert (slots.used, slots.sending._value) == (1, 1)
    await lease.settle()
    assert (slots.used, slots.sending._value, slots.publishing._value) == (0, 2, 1)
    lease.end()
    assert (slots.used, slots.sending._value, slots.publishing._value) == (0, 2, 2)
    lease.end()  # idempotent
    assert (slots.used, slots.sending._value, slots.publishing._value) == (0, 2, 2)


async def test_a_lease_that_never_got_its_turn_gives_back_its_count() -> None:
    slots = Slots(1)
    slots.take()
    lease = slots.lease()
    lease.end()
    assert (slots.used, slots.free()) == (0, 1)


async def test_settling_waits_while_every_publishing_slot_is_taken() -> None:
    slots = Slots(1)
    first, second = slots.lease(), slots.lease()
    slots.take()
    await first.send()
    await first.settle()  # holds the one publishing slot
    slots.take()
    await second.send()
    waiting = asyncio.create_task(second.settle())
    await asyncio.sleep(0.01)
    assert not waiting.done() and second.state == "sending"
    first.end()
    await asyncio.wait_for(waiting, 1)
    assert second.state == "publishing"


class UnackedPublisher(MemoryPublisher):
    """Keeps every produce waiting for its ack until `ack` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.ack = asyncio.Event()

    async def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        await self.ack.wait()
        await super().produce(topic, value, key=key, headers=headers)


async def test_a_delivery_waiting_for_its_status_ack_holds_no_sending_slot() -> None:
    # One sending slot: the first delivery is sent and its outcome is in the ledger, but
    # Kafka has not acknowledged its status event yet. The next delivery claims and sends
    # meanwhile instead of waiting behind an ack.
    w = World()
    out = UnackedPublisher()
    w.out = out
    w.handler = w.make_handler("me")
    slots = Slots(1)

    async def process(d: dict[str, Any]) -> str:
        slots.take()
        lease = slots.lease()
        try:
            await lease.send()
            CURRENT.set(lease)
            return await w.handle(d)
        finally:
            lease.end()

    both_sent = asyncio.Event()
    send = w.twilio.send

    async def counted(message: Any) -> Any:
        result = await send(message)
        if w.twilio.calls == 2:
            both_sent.set()
        return result

    setattr(w.twilio, "send", counted)  # noqa: B010
    first = asyncio.create_task(process(delivery()))
    second = asyncio.create_task(process(delivery(delivery_id="d-2")))
    await asyncio.wait_for(both_sent.wait(), 2)
    await asyncio.sleep(0.05)  # the second outcome reaches the ledger
    assert {w.ledger.rows[d].state for d in ("d-1", "d-2")} == {State.SENT}
    assert out.outcomes() == []  # neither is acknowledged yet
    out.ack.set()
    assert await asyncio.gather(first, second) == [State.SENT, State.SENT]
    assert (slots.used, slots.sending._value, slots.publishing._value) == (0, 1, 1)
