"""The outcome of a delivery made durable: the ledger's transition out of `sending`, then
the records it causes (status event, retry or dead letter) produced and acked, then the
row marked published. Every step is retried while Cassandra or Kafka is out (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from infra.ratelimit import TokenBucket
from infra.retry import Backoff, retrying
from schemas import codec
from schemas.channels import Outcome as StatusOutcome
from schemas.contract import Reason
from schemas.events import now_ms
from senders import metrics, status
from senders.breaker import CircuitBreaker
from senders.ledger import (
    UNCERTAIN_AFTER_CRASH,
    Ledger,
    LedgerOutcome,
    LedgerRow,
    Ref,
    State,
)
from senders.providers.base import Provider
from senders.settings import SenderSettings
from senders.slots import settle

log = logging.getLogger(__name__)
T = TypeVar("T")

UNCERTAIN_TIMEOUT = Reason.UNCERTAIN_TIMEOUT
RETRIES_EXHAUSTED = Reason.RETRIES_EXHAUSTED
EXPIRED = Reason.EXPIRED
TOKEN_INVALIDATED = Reason.TOKEN_INVALIDATED
DUPLICATE = Reason.DUPLICATE
LOST = "claim_lost"

# A step that keeps failing for a reason nobody foresaw (a bug, a poison value) is given up
# after this many attempts, instead of stalling its partition forever.
MAX_ATTEMPTS = 5
DURABLE_BACKOFF = Backoff(first_s=0.2, max_s=5.0)


class RecordSink(Protocol):
    async def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None: ...


class Stopping(Exception):
    """The process is shutting down; the record stays unacknowledged and comes back."""


def _ms(v: Any) -> int | None:
    if v is None or isinstance(v, int):
        return v
    return int(v.timestamp() * 1000)


class OutcomeWriter:
    """The handler's state, and the steps after the provider call; `Sending` adds the
    call, `DeliveryHandler` the claim before it."""

    def __init__(
        self,
        *,
        settings: SenderSettings,
        ledger: Ledger,
        publisher: RecordSink,
        providers: Mapping[str, Provider],
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.codec = codec.codec_for(settings.kafka.schema_registry_url)
        self.ledger = ledger
        self.publisher = publisher
        self.providers = providers
        self.owner = owner
        self._clock = clock
        self.stopping = asyncio.Event()
        b = settings.breaker
        self.breakers = {
            name: CircuitBreaker(
                name,
                failure_threshold=b.failure_threshold,
                open_for_s=b.open_for_s,
                half_open_probes=b.half_open_probes,
                on_change=lambda n, s: metrics.BREAKER_STATE.labels(n).set(int(s)),
            )
            for name in providers
        }
        for name in providers:
            metrics.BREAKER_STATE.labels(name).set(0)
        r = settings.rate_limits
        self.buckets = {
            name: TokenBucket(r.rate(name), max(1.0, r.rate(name) * r.burst_s))
            for name in providers
        }
        # Room for calls per provider (`Provider.concurrency`), taken before the claim.
        self.rooms = {
            name: asyncio.Semaphore(p.concurrency) for name, p in providers.items() if p.concurrency
        }
        self._local: dict[str, asyncio.Event] = {}
        # Claims of this process whose provider call started but whose outcome is unknown.
        self._called: set[str] = set()

    # -- outcome -------------------------------------------------------------------------

    async def _finish(
        self,
        d: dict[str, Any],
        ref: Ref,
        attempt: int,
        outcome: LedgerOutcome,
        provider: str,
        consumed_from: str = "",
        retry_at: tuple[int, int] | None = None,
    ) -> str:
        did = ref.delivery_id
        applied = await self._durable(lambda: self.ledger.finish(ref, self.owner, outcome))
        if not applied:
            # A retried LWT whose first try timed out yet was applied reads as not applied.
            now = await self._durable(lambda: self.ledger.read(ref))
            applied = now is not None and now.owner == self.owner and now.state == outcome.state
            # Our claim outlived `claim_stale_after_s` (a stalled process) and another
            # sender dead-lettered it as uncertain, but we know the provider took it: say
            # so, or a redrive of that dead letter would send it a second time.
            if (
                not applied
                and outcome.state == State.SENT
                and now is not None
                and now.state == State.DEAD_LETTERED
                and now.reason == UNCERTAIN_AFTER_CRASH
            ):
                applied = await self._durable(
                    lambda: self.ledger.correct_uncertain(ref, self.owner, outcome)
                )
        self._called.discard(did)
        if not applied:
            # Another sender declared our claim stale and resolved it; its outcome stands.
            log.warning("claim lost before the outcome was recorded", extra={"delivery_id": did})
            return self._count(d, provider, LOST)
        row = ledger_row(outcome, attempt, self.owner)
        await settle()  # the claim is over: what is left holds a publishing slot
        await self._publish(d, ref, row, consumed_from, retry_at)
        return self._count(d, outcome.provider or provider, outcome.state, outcome.reason)

    async def _publish(
        self,
        d: dict[str, Any],
        ref: Ref,
        row: LedgerRow,
        consumed_from: str,
        retry_at: tuple[int, int] | None = None,
    ) -> None:
        """Produce the records of `row`'s outcome and mark it published. Idempotent."""
        records = self._records(d, row, consumed_from, retry_at)

        async def run() -> None:
            if row.state == State.FAILED and row.reason == TOKEN_INVALIDATED:
                await self.ledger.delete_device(d["user_id"], d["device_id"], d["address"])
            if len(records) == 1:  # the usual case: no gather, no task
                r = records[0]
                await self.publisher.produce(
                    r.topic, r.encode(self.codec), key=r.key, headers=r.headers
                )
            else:
                await asyncio.gather(
                    *(
                        self.publisher.produce(
                            r.topic, r.encode(self.codec), key=r.key, headers=r.headers
                        )
                        for r in records
                    )
                )
            await self.ledger.published(ref, d, row)

        await self._durable(run)

    def _records(
        self,
        d: dict[str, Any],
        row: LedgerRow,
        consumed_from: str,
        retry_at: tuple[int, int] | None,
    ) -> list[status.Record]:
        """`retry_at`: (tier, not_before ms) of a retry being scheduled now."""
        state, attempt = row.state, row.attempt
        prefix = self.settings.topic_prefix

        def event(outcome: StatusOutcome, reason: str | None = None) -> status.Record:
            return status.status(
                d,
                outcome,
                attempt=attempt,
                reason=reason,
                provider=row.provider,
                provider_message_id=row.provider_message_id,
                prefix=prefix,
            )

        if state == State.SENT:
            return [event(StatusOutcome.SENT)]
        if state == State.FAILED:
            out = [event(StatusOutcome.FAILED, row.reason)]
            if row.reason == TOKEN_INVALIDATED:
                out.append(event(StatusOutcome.TOKEN_INVALIDATED, row.last_error))
                # Produced after the device row is deleted, so a processor that drops its
                # cached copy of the user reads the devices without it.
                out.append(status.device_removed(d["user_id"], prefix))
            return out
        if state == State.DROPPED:
            return [event(StatusOutcome.DROPPED, row.reason)]
        if state == State.DEAD_LETTERED:
            return [
                status.dead_letter(
                    {**d, "attempt": attempt},
                    reason=row.reason or "-",
                    consumed_from=consumed_from,
                    first_error=row.first_error,
                    last_error=row.last_error,
                    prefix=prefix,
                ),
                event(StatusOutcome.DEAD_LETTERED, row.reason),
            ]
        if state == State.RETRYING:
            if retry_at is None:  # re-publishing after a crash: the attempt's own tier
                retry_at = (
                    attempt,
                    now_ms() + int(1000 * self.settings.retry.delays_s[attempt - 1]),
                )
            tier, not_before_ms = retry_at
            return [
                status.retry(
                    {**d, "attempt": attempt},
                    tier=tier,
                    not_before_ms=not_before_ms,
                    last_error=row.last_error or "-",
                    prefix=prefix,
                ),
                status.status(
                    d,
                    StatusOutcome.RETRIED,
                    attempt=attempt + 1,
                    reason=row.last_error,
                    provider=row.provider,
                    prefix=prefix,
                ),
            ]
        raise ValueError(f"no records for state {state}")

    # -- helpers -------------------------------------------------------------------------

    def _count(
        self, d: dict[str, Any], provider: str | None, outcome: str, reason: str | None = None
    ) -> str:
        metrics.delivered(d["channel"], provider or "-", outcome).inc()
        if outcome == State.DEAD_LETTERED:
            metrics.DEAD_LETTERS.labels(d["channel"], reason or "-").inc()
        return outcome

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return
        raise Stopping

    async def _durable(self, op: Callable[[], Awaitable[T]]) -> T:
        """Retry a step whose failure would leave the outcome unrecorded. An outage (Cassandra
        or Kafka unavailable) is waited out: fail closed, never skip the step. Any other
        failure is raised after `MAX_ATTEMPTS`, and at shutdown `Stopping`."""
        return await retrying(
            op,
            DURABLE_BACKOFF,
            attempts=MAX_ATTEMPTS,
            on_retry=lambda _exc, _delay: log.exception("ledger/outcome write failed; retrying"),
            sleep=self._sleep,
        )


def retry_tier(delays: list[float], attempt: int, retry_after: float) -> int:
    """The retry tier after `attempt` failed: tier `attempt`, or a later one whose delay
    covers the provider's Retry-After. A tier is a FIFO whose head pauses its partition
    until due, so a record due much later than the tier's delay would hold back the
    records behind it."""
    tier = attempt
    while tier < len(delays) and delays[tier - 1] < retry_after:
        tier += 1
    return tier


def ledger_row(outcome: LedgerOutcome, attempt: int, owner: str) -> LedgerRow:
    return LedgerRow(
        state=outcome.state,
        attempt=attempt,
        owner=owner,
        provider=outcome.provider,
        provider_message_id=outcome.provider_message_id,
        reason=outcome.reason,
        first_error=outcome.first_error,
        last_error=outcome.last_error,
        pinned_provider=outcome.pinned_provider,
    )
