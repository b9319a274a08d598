"""The Kafka records that make an outcome visible: status events, retries, dead letters,
user changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas import codec
from schemas.channels import Outcome
from schemas.contract import Header, Topics
from schemas.events import now_ms, status_event
from schemas.records import UserChange

SOURCE = "senders"


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    schema: str
    value: Mapping[str, Any]
    headers: tuple[tuple[str, bytes], ...] = ()

    def encode(self, values: codec.Codec) -> bytes:
        """Encoded when produced, inside the handler's retry loop, so an unreachable
        schema registry is waited out like an unreachable broker."""
        return values.encode(self.schema, self.value, topic=self.topic)


def status(
    delivery: dict[str, Any],
    outcome: Outcome,
    *,
    attempt: int,
    reason: str | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
    prefix: str = "",
) -> Record:
    event = status_event(
        notification_id=delivery["notification_id"],
        event_id=delivery["event_id"],
        user_id=delivery["user_id"],
        category=delivery["category"],
        outcome=outcome.value,
        reason=reason,
        delivery_id=delivery["delivery_id"],
        channel=delivery["channel"],
        provider=provider,
        attempt=attempt,
        provider_message_id=provider_message_id,
        source=SOURCE,
        trace_id=delivery.get("trace_id"),
        requested_at=delivery.get("requested_at"),
    )
    return Record(
        Topics(prefix).status,
        delivery["notification_id"].encode(),
        codec.STATUS,
        event,
    )


def device_removed(user_id: str, prefix: str = "") -> Record:
    """The user's devices changed: processors drop their cached copy of the user."""
    change: UserChange = {"user_id": user_id, "kind": "device", "changed_at": now_ms()}
    return Record(Topics(prefix).user_changes, user_id.encode(), codec.USER_CHANGE, change)


def origin_topic(delivery: dict[str, Any], consumed_from: str, prefix: str = "") -> str:
    """The channel topic a record came in on, before any retry tier (where a redrive goes)."""
    if ".retry." in consumed_from or consumed_from.endswith(".dlq"):
        return Topics(prefix).channel(
            delivery["channel"], priority=delivery.get("priority") == "high"
        )
    return consumed_from


def retry(
    delivery: dict[str, Any], *, tier: int, not_before_ms: int, last_error: str, prefix: str = ""
) -> Record:
    value = {
        **delivery,
        "attempt": delivery["attempt"] + 1,
        "not_before": not_before_ms,
        "last_error": last_error,
    }
    return Record(
        Topics(prefix).retry(delivery["channel"], tier),
        delivery["user_id"].encode(),
        codec.DELIVERY,
        value,
    )


def dead_letter(
    delivery: dict[str, Any],
    *,
    reason: str,
    consumed_from: str,
    first_error: str | None,
    last_error: str | None,
    prefix: str = "",
) -> Record:
    value = {**delivery, "last_error": last_error}
    headers = dead_letter_headers(
        reason=reason,
        attempts=delivery["attempt"],
        original_topic=origin_topic(delivery, consumed_from, prefix),
        first_error=first_error,
        last_error=last_error,
    )
    return Record(
        Topics(prefix).dlq(delivery["channel"]),
        delivery["user_id"].encode(),
        codec.DELIVERY,
        value,
        headers,
    )


def dead_letter_headers(
    *,
    reason: str,
    attempts: int,
    original_topic: str,
    first_error: str | None = None,
    last_error: str | None = None,
) -> tuple[tuple[str, bytes], ...]:
    return (
        (Header.REASON, reason.encode()),
        (Header.ATTEMPTS, str(attempts).encode()),
        (Header.FIRST_ERROR, (first_error or reason).encode()),
        (Header.LAST_ERROR, (last_error or reason).encode()),
        (Header.ORIGINAL_TOPIC, original_topic.encode()),
        (Header.FAILED_AT, str(now_ms()).encode()),
    )
