"""What a failed provider call means for the delivery.

- PERMANENT: the same message would fail again (bad address, bad payload): `failed`.
- DEFINITE: retriable, and the provider certainly did not accept the message (it answered
  429/5xx, or the connection was never made): failing over to another provider is safe.
- AMBIGUOUS: retriable, but the request may have reached the provider (a read timeout
  after sending, a dropped connection, an unknown exception): failing over or retrying
  could deliver twice, so it is dead-lettered as uncertain, unless the channel's route
  allows a retry on the same provider (`retry_ambiguous`).
"""

from __future__ import annotations

import asyncio
import enum

from senders.providers.base import NOT_SENT, DeliveryError


class Kind(enum.Enum):
    PERMANENT = "permanent"
    DEFINITE = "definite"
    AMBIGUOUS = "ambiguous"


def _causes(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return out


def classify(exc: BaseException) -> Kind:
    if isinstance(exc, DeliveryError):
        if not exc.retriable:
            return Kind.PERMANENT
        explicit = getattr(exc, "ambiguous", None)  # a provider may say so itself
        if isinstance(explicit, bool):
            return Kind.AMBIGUOUS if explicit else Kind.DEFINITE
        if exc.status is not None:  # the provider answered: it did not take the message
            return Kind.DEFINITE
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Kind.AMBIGUOUS  # our own deadline: the request may be in flight
    if any(isinstance(c, NOT_SENT) for c in _causes(exc)):
        return Kind.DEFINITE
    return Kind.AMBIGUOUS


def reason_of(exc: BaseException) -> str:
    """A short, PII-free reason for logs, headers and status events."""
    if isinstance(exc, DeliveryError):
        return exc.reason
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__
