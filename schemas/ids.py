"""Deterministic ids: reprocessing a request yields the same notification and delivery ids,
which is what makes fan-out and delivery idempotent."""

from __future__ import annotations

import uuid

_NS = uuid.UUID("6f1c1d0e-7c57-4b8e-9a55-2f6a8e3b9d10")


def notification_id(event_id: str) -> str:
    return str(uuid.uuid5(_NS, f"notification:{event_id}"))


def delivery_id(notification_id: str, channel: str, target: str) -> str:
    """`target` is the device id for push and the channel name for SMS and email."""
    return str(uuid.uuid5(_NS, f"delivery:{notification_id}:{channel}:{target}"))


def status_id(subject_id: str, outcome: str, attempt: int = 0, reason: str | None = None) -> str:
    """Same subject + outcome + attempt + reason → same id, so consumers can drop repeats."""
    return str(uuid.uuid5(_NS, f"status:{subject_id}:{outcome}:{attempt}:{reason or ''}"))
