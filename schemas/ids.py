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
    x = hashlib.sha1(_NS_BYTES + name.encode()).hexdigest()
    # Version 5 in the 13th digit, the RFC 4122 variant (10xx) in the 17th.
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def notification_id(event_id: str) -> str:
    return uuid5(f"notification:{event_id}")


def delivery_id(notification_id: str, channel: str, target: str) -> str:
    """`target` is the device id for push and the channel name for SMS and email."""
    return uuid5(f"delivery:{notification_id}:{channel}:{target}")


def status_id(subject_id: str, outcome: str, attempt: int = 0, reason: str | None = None) -> str:
    """Same subject + outcome + attempt + reason → same id, so consumers can drop repeats."""
    return uuid5(f"status:{subject_id}:{outcome}:{attempt}:{reason or ''}")
