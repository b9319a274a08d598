"""In-memory stand-ins for the ledger, the Kafka producer and a provider (unit tests only)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas import codec
from schemas.events import now_ms
from senders.ledger import LedgerRow, Outcome, State
from senders.providers.base import DeliveryError, Message, Provider, SendResult


class MemoryLedger:
    """Same conditions as the CQL lightweight transactions, on a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, LedgerRow] = {}
        self.logs: list[tuple[str, str]] = []
        self.devices: dict[tuple[str, str], str] = {}
        self.fail_next: int = 0  # raise on the next n calls (Cassandra unavailable)

    def _maybe_fail(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("cassandra unavailable")

    async def claim(
        self, delivery_id: str, notification_id: str, attempt: int, owner: str, provider: str
    ) -> LedgerRow | None:
        self._maybe_fail()
        if delivery_id in self.rows:
            return self.rows[delivery_id]
        self.rows[delivery_id] = LedgerRow(
            State.SENDING, attempt, owner=owner, provider=provider, updated_at=datetime.now(UTC)
        )
        return None

    async def reclaim(
        self, delivery_id: str, attempt: int, owner: str, provider: str, expect: LedgerRow
    ) -> bool:
        self._maybe_fail()
        row = self.rows[delivery_id]
        if row.state != expect.state or row.attempt != expect.attempt:
            return False
        self.rows[delivery_id] = dataclasses.replace(
            row,
            state=State.SENDING,
            attempt=attempt,
            owner=owner,
            provider=provider,
            published=False,
            updated_at=datetime.now(UTC),
        )
        return True

    async def set_provider(self, delivery_id: str, owner: str, provider: str) -> bool:
        row = self.rows[delivery_id]
        if row.state != State.SENDING or row.owner != owner:
            return False
        self.rows[delivery_id] = dataclasses.replace(row, provider=provider)
        return True

    def _apply(self, delivery_id: str, owner: str, o: Outcome) -> None:
        row = self.rows[delivery_id]
        self.rows[delivery_id] = dataclasses.replace(
            row,
            state=o.state,
            reason=o.reason,
            provider=o.provider,
            provider_message_id=o.provider_message_id,
            first_error=o.first_error,
            last_error=o.last_error,
            pinned_provider=o.pinned_provider,
            owner=owner,
            published=False,
            updated_at=datetime.now(UTC),
        )

    async def finish(self, delivery_id: str, owner: str, outcome: Outcome) -> bool:
        self._maybe_fail()
        row = self.rows[delivery_id]
        if row.state != State.SENDING or row.owner != owner:
            return False
        self._apply(delivery_id, owner, outcome)
        return True

    async def resolve_stale(
        self, delivery_id: str, owner: str, expect: LedgerRow, outcome: Outcome
    ) -> bool:
        row = self.rows[delivery_id]
        if row.state != State.SENDING or row.owner != expect.owner or row.attempt != expect.attempt:
            return False
        self._apply(delivery_id, owner, outcome)
        return True

    async def correct_uncertain(self, delivery_id: str, owner: str, outcome: Outcome) -> bool:
        row = self.rows[delivery_id]
        if row.state != State.DEAD_LETTERED or row.reason != "uncertain_after_crash":
            return False
        self._apply(delivery_id, owner, outcome)
        return True

    async def mark_published(self, delivery_id: str) -> None:
        self.rows[delivery_id] = dataclasses.replace(self.rows[delivery_id], published=True)

    async def read(self, delivery_id: str) -> LedgerRow | None:
        return self.rows.get(delivery_id)

    async def log(self, delivery: dict[str, Any], row: LedgerRow) -> None:
        self.logs.append((delivery["delivery_id"], row.state))

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
        "requested_at": now_ms(),
        "created_at": now_ms(),
    }
    base.update(over)
    return base


def retriable(reason: str = "twilio:503", *, status: int | None = 503, **kw: Any) -> DeliveryError:
    return DeliveryError(reason, provider=reason.split(":")[0], retriable=True, status=status, **kw)


def permanent(reason: str = "twilio:400", **kw: Any) -> DeliveryError:
    return DeliveryError(reason, provider=reason.split(":")[0], retriable=False, status=400, **kw)
