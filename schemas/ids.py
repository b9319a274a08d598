"""Deterministic ids: reprocessing a request yields the same notification and delivery ids,
which is what makes fan-out and delivery idempotent."""

from __future__ import annotations

import hashlib
import uuid

_NS = uuid.UUID("6f1c1d0e-7c57-4b8e-9a55-2f6a8e3b9d10")
_NS_BYTES = _NS.bytes


def uuid5(name: str) -> str:
    """`str(uuid.uuid5(_NS, name))` without the UUID object: ids are minted several times
    per request on the hot path, and the object costs most of the time."""
    h = bytearray(hashlib.sha1(_NS_BYTES + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def notification_id(event_id: str) -> str:
    return uuid5(f"notification:{event_id}")


def delivery_id(notification_id: str, channel: str, target: str) -> str:
    """`target` is the device id for push and the channel name for SMS and email."""
    return uuid5(f"delivery:{notification_id}:{channel}:{target}")


def status_id(subject_id: str, outcome: str, attempt: int = 0, reason: str | None = None) -> str:
    """Same subject + outcome + attempt + reason → same id, so consumers can drop repeats."""
    return uuid5(f"status:{subject_id}:{outcome}:{attempt}:{reason or ''}")
