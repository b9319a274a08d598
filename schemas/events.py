"""Builders for the records herald writes, so every producer fills them the same way."""

from __future__ import annotations

import time
from datetime import datetime

from schemas import ids
from schemas.records import StatusEvent


def now_ms() -> int:
    # The same clock as `datetime.now(UTC).timestamp()`, without building a datetime
    # (0.1 µs instead of 0.6; called several times for every record herald writes).
    return time.time_ns() // 1_000_000


def to_ms(value: datetime | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)


def status_event(
    *,
    notification_id: str,
    event_id: str,
    user_id: str,
    category: str,
    outcome: str,
    reason: str | None = None,
    delivery_id: str | None = None,
    channel: str | None = None,
    provider: str | None = None,
    attempt: int = 0,
    provider_message_id: str | None = None,
    source: str | None = None,
    trace_id: str | None = None,
    requested_at: datetime | int | None = None,
    occurred_at: datetime | int | None = None,
) -> StatusEvent:
    """A StatusEvent record; its status_id is deterministic for deterministic outcomes."""
    subject = delivery_id or f"{notification_id}:{channel or '-'}"
    return {
        "status_id": ids.status_id(subject, outcome, attempt, reason),
        "notification_id": notification_id,
        "event_id": event_id,
        "delivery_id": delivery_id,
        "user_id": user_id,
        "channel": channel,
        "provider": provider,
        "category": category,
        "outcome": outcome,
        "reason": reason,
        "attempt": attempt,
        "provider_message_id": provider_message_id,
        "source": source,
        "trace_id": trace_id,
        "requested_at": to_ms(requested_at),
        "occurred_at": to_ms(occurred_at) or now_ms(),
    }
