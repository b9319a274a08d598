"""In-memory stand-ins for the ledger, the Kafka producer and a provider (unit tests only)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas import codec
from schemas.events import now_ms
from senders.ledger import (
    Condition,
    LedgerOutcome,
    LedgerRow,
    Ref,
    State,
    absent,
    held_as,
    held_by,
    is_state,
    uncertain,
)
from senders.providers.base import DeliveryError, Message, Provider, SendResult


class MemoryLedger:
    """The CQL ledger's conditions (`senders.ledger`'s, the same functions) on a dict.

    Rows are keyed by delivery id; a delivery seen under two ledger partitions would be two
    rows in Cassandra (two claims, maybe two sends), so it fails the test instead."""

    def __init__(self) -> None:
        self.rows: dict[str, LedgerRow] = {}
        self.refs: dict[str, Ref] = {}
        self.logs: list[tuple[str, str]] = []
        self.devices: dict[tuple[str, str], str] = {}
        self.fail_next: int = 0  # raise on the next n calls (Cassandra unavailable)

    def _maybe_fail(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("cassandra unavailable")

    def _row(self, ref: Ref) -> LedgerRow | None:
        known = self.refs.setdefault(ref.delivery_id, ref)
        assert known == ref, f"{ref.delivery_id} under two ledger partitions: {known}, {ref}"
        return self.rows.get(ref.delivery_id)

    def _write(self, ref: Ref, condition: Condition, **values: Any) -> bool:
        row = self._row(ref)
        if not condition(row):
            return False
        base = row or LedgerRow(State.SENDING, 0)
        self.rows[ref.delivery_id] = dataclasses.replace(
            base, **values, updated_at=datetime.now(UTC)
        )
        return True

    async def claim(
        self, ref: Ref, notification_id: str, attempt: int, owner: str, provider: str
    ) -> LedgerRow | None:
        self._maybe_fail()
        if self._write(
            ref,
            absent(),
            state=State.SENDING,
            attempt=attempt,
            owner=owner,
            provider=provider,
            published=False,
        ):
            return None
        return self.rows[ref.delivery_id]

    async def reclaim(
        self,
        ref: Ref,
        notification_id: str,
        attempt: int,
        owner: str,
        provider: str,
        expect: LedgerRow,
    ) -> bool:
        self._maybe_fail()
        return self._write(
            ref,
            is_state(expect.state, expect.attempt),
            state=State.SENDING,
            attempt=attempt,
            owner=owner,
            provider=provider,
            published=False,
        )

    async def set_provider(self, ref: Ref, owner: str, provider: str) -> bool:
        return self._write(ref, held_by(owner), provider=provider)

    def _outcome(self, ref: Ref, condition: Condition, owner: str, o: LedgerOutcome) -> bool:
        return self._write(
            ref,
            condition,
            state=o.state,
            reason=o.reason,
            provider=o.provider,
            provider_message_id=o.provider_message_id,
            first_error=o.first_error,
            last_error=o.last_error,
            pinned_provider=o.pinned_provider,
            owner=owner,
            published=False,
        )

    async def finish(self, ref: Ref, owner: str, outcome: LedgerOutcome) -> bool:
        self._maybe_fail()
        return self._outcome(ref, held_by(owner), owner, outcome)

    async def resolve_stale(
        self, ref: Ref, owner: str, expect: LedgerRow, outcome: LedgerOutcome
    ) -> bool:
        return self._outcome(ref, held_as(expect), owner, outcome)

    async def correct_uncertain(self, ref: Ref, owner: str, outcome: LedgerOutcome) -> bool:
        return self._outcome(ref, uncertain(), owner, outcome)

    async def published(self, ref: Ref, delivery: dict[str, Any], row: LedgerRow) -> None:
        self._row(ref)
        self.rows[ref.delivery_id] = dataclasses.replace(self.rows[ref.delivery_id], published=True)
        self.logs.append((delivery["delivery_id"], row.state))

    async def read(self, ref: Ref) -> LedgerRow | None:
        return self._row(ref)

    async def delete_device(self, user_id: str, device_id: str, token: str) -> bool:
        if self.devices.get((user_id, device_id)) == token:
            del self.devices[(user_id, device_id)]
            return True
        return False


@dataclasses.dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def decoded(self) -> dict[str, Any]:
        return codec.decode(self.value)


class MemoryPublisher:
    def __init__(self) -> None:
        self.records: list[Produced] = []

    async def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        self.records.append(Produced(topic, key, value, dict(headers or ())))

    def on(self, topic: str) -> list[Produced]:
        return [r for r in self.records if r.topic == topic]

    def outcomes(self) -> list[str]:
        return [r.decoded()["outcome"] for r in self.records if r.topic == "notifications.status"]


class FakeProvider(Provider):
    """Scripted results: each call pops the next step (an exception or a message id)."""

    def __init__(self, name: str, channels: Sequence[str], steps: Sequence[Any] = ()) -> None:
        self.name = name
        self.channels = frozenset(channels)
        self.steps = list(steps)
        self.sent: list[Message] = []
        self.calls = 0
        self.gate: asyncio.Event | None = None  # when set, send() waits for it
        self.on_send: Callable[[Message], None] | None = None

    async def send(self, message: Message) -> SendResult:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        step = self.steps.pop(0) if self.steps else None
        if isinstance(step, BaseException):
            raise step
        self.sent.append(message)
        return SendResult(self.name, step if isinstance(step, str) else f"{self.name}-{self.calls}")


# One request time for every test delivery: copies of a delivery share its ledger partition.
REQUESTED_AT = now_ms()


def delivery(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "delivery_id": "d-1",
        "notification_id": "n-1",
        "event_id": "e-1",
        "user_id": "u-1",
        "channel": "sms",
        "category": "transactional",
        "priority": "normal",
        "device_id": None,
        "address": "+15550000001",
        "locale": None,
        "title": None,
        "subject": None,
        "body": "hello",
        "html": None,
        "data": {},
        "collapse_key": None,
        "expires_at": None,
        "attempt": 1,
        "not_before": None,
        "last_error": None,
        "trace_id": None,
        "requested_at": REQUESTED_AT,
        "created_at": now_ms(),
    }
    base.update(over)
    return base


def retriable(reason: str = "twilio:503", *, status: int | None = 503, **kw: Any) -> DeliveryError:
    return DeliveryError(reason, provider=reason.split(":")[0], retriable=True, status=status, **kw)


def permanent(reason: str = "twilio:400", **kw: Any) -> DeliveryError:
    return DeliveryError(reason, provider=reason.split(":")[0], retriable=False, status=400, **kw)
