"""The provider call of a claimed delivery, and failover: the next provider of the route
is tried only where the previous one certainly did not accept the message (refused, 5xx
before acceptance, circuit open); an ambiguous failure stops there."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import UTC, datetime
from typing import Any

from schemas.events import now_ms
from senders import metrics
from senders.decisions import Kind, classify, reason_of
from senders.ledger import (
    LedgerOutcome,
    Ref,
    State,
)
from senders.outputs import (
    EXPIRED,
    LOST,
    RETRIES_EXHAUSTED,
    TOKEN_INVALIDATED,
    UNCERTAIN_TIMEOUT,
    OutcomeWriter,
    _ms,
    retry_tier,
)
from senders.providers.base import DeliveryError, Message

log = logging.getLogger(__name__)


def to_message(d: dict[str, Any]) -> Message:
    expires = d.get("expires_at")
    return Message(
        delivery_id=d["delivery_id"],
        notification_id=d["notification_id"],
        channel=d["channel"],
        address=d["address"],
        body=d["body"],
        title=d.get("title"),
        subject=d.get("subject"),
        html=d.get("html"),
        data=dict(d.get("data") or {}),
        collapse_key=d.get("collapse_key"),
        expires_at=_as_datetime(expires),
        priority=d.get("priority") or "normal",
        category=d["category"],
        created_at=_as_datetime(d.get("created_at")),
    )


def _as_datetime(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromtimestamp(v / 1000, UTC)


class Room:
    """A delivery's room for one call at a provider (`Provider.concurrency`): taken before
    the claim and given back as soon as the call returns, so a delivery waiting for a busy
    provider holds no claim, and a crash cannot leave it `uncertain_after_crash`. One room
    at a time: a failover gives back the first provider's before waiting for the next."""

    __slots__ = ("_gate",)

    def __init__(self) -> None:
        self._gate: asyncio.Semaphore | None = None

    async def take(self, gate: asyncio.Semaphore | None) -> None:
        self.release()
        if gate is not None:
            await gate.acquire()
            self._gate = gate

    def release(self) -> None:
        if self._gate is not None:
            self._gate.release()
            self._gate = None


class Sending(OutcomeWriter):
    async def _send(
        self,
        d: dict[str, Any],
        ref: Ref,
        attempt: int,
        providers: list[str],
        retry_ambiguous: bool,
        pinned: str | None,
        first_error: str | None,
        consumed_from: str,
        *,
        prepaid: str | None = None,
        room: Room | None = None,
    ) -> str:
        """`prepaid`: the provider whose rate token and room (`room`) the caller took before
        claiming."""
        did, channel = d["delivery_id"], d["channel"]
        room = room or Room()
        message = to_message(d)
        current = providers[0]
        errors: list[str] = []
        retry_after = 0.0
        ambiguous: str | None = None
        exc: Exception
        for name in [pinned] if pinned else providers:
            if name not in self.providers:  # pinned to a provider no longer configured
                errors.append(f"{name}:not_configured")
                continue
            breaker = self.breakers[name]
            if not breaker.allow():
                errors.append(f"{name}:circuit_open")
                continue
            if name != current:
                # Recorded before the call, so a crash leaves the right provider in the row.
                record = functools.partial(self.ledger.set_provider, ref, self.owner, name)
                if not await self._durable(record):
                    breaker.release()
                    self._called.discard(did)
                    return self._count(d, name, LOST)
                metrics.FAILOVERS.labels(channel, name).inc()
                current = name
            if name == prepaid:
                prepaid = None
            else:
                await self.buckets[name].acquire()
                await room.take(self.rooms.get(name))
            self._called.add(did)
            started = time.monotonic()
            try:
                # A timeout scope, not `wait_for`: no task per send.
                async with asyncio.timeout(self.settings.send_timeout_s):
                    result = await self.providers[name].send(message)
            except Exception as caught:
                room.release()
                exc = caught
                kind = classify(exc)
                metrics.provider_latency(name, kind.value).observe(time.monotonic() - started)
            else:
                room.release()
                metrics.provider_latency(name, "ok").observe(time.monotonic() - started)
                breaker.record_success()
                outcome = LedgerOutcome(
                    State.SENT,
                    provider=result.provider or name,
                    provider_message_id=result.message_id,
                )
                return await self._finish(d, ref, attempt, outcome, name)

            reason = reason_of(exc)
            if kind is Kind.PERMANENT:
                breaker.record_success()  # it answered; the message is at fault
                invalid = isinstance(exc, DeliveryError) and exc.invalid_address
                token = invalid and channel.startswith("push.") and d.get("device_id")
                outcome = LedgerOutcome(
                    State.FAILED,
                    reason=TOKEN_INVALIDATED if token else reason,
                    provider=name,
                    first_error=first_error or reason,
                    last_error=reason,
                    pinned_provider=pinned,
                )
                return await self._finish(d, ref, attempt, outcome, name)
            breaker.record_failure()
            errors.append(reason)
            if isinstance(exc, DeliveryError) and exc.retry_after:
                retry_after = max(retry_after, exc.retry_after)
            if kind is Kind.AMBIGUOUS:
                ambiguous = name
                break
            log.info(
                "provider failed, trying the next one",
                extra={"delivery_id": did, "provider": name, "reason": reason},
            )

        last_error = errors[-1] if errors else "no_provider"
        first_error = first_error or (errors[0] if errors else last_error)
        pinned = ambiguous or pinned

        def dead(reason: str) -> LedgerOutcome:
            return LedgerOutcome(
                State.DEAD_LETTERED,
                reason=reason,
                provider=current,
                first_error=first_error,
                last_error=last_error,
                pinned_provider=pinned,
            )

        if ambiguous and not retry_ambiguous:
            return await self._finish(
                d, ref, attempt, dead(UNCERTAIN_TIMEOUT), current, consumed_from
            )
        delays = self.settings.retry.delays_s
        if attempt > len(delays):
            return await self._finish(
                d, ref, attempt, dead(RETRIES_EXHAUSTED), current, consumed_from
            )
        tier = retry_tier(delays, attempt, retry_after)
        not_before = now_ms() + int(1000 * max(delays[tier - 1], retry_after))
        expires = _ms(d.get("expires_at"))
        if expires is not None and not_before > expires:
            return await self._finish(
                d, ref, attempt, LedgerOutcome(State.DROPPED, reason=EXPIRED), current
            )
        outcome = LedgerOutcome(
            State.RETRYING,
            reason=last_error,
            provider=current,
            first_error=first_error,
            last_error=last_error,
            pinned_provider=pinned,
        )
        metrics.RETRIES.labels(channel, str(tier)).inc()
        return await self._finish(
            d, ref, attempt, outcome, current, consumed_from, (tier, not_before)
        )
