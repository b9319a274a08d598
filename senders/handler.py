"""What happens to one delivery record: claim, send, decide, publish. No Kafka consuming here.

The order of writes is what makes a redelivered record harmless:

1. claim the delivery in the ledger (conditional write) — only one sender can hold it;
2. call the provider (failing over only where the primary certainly did not accept);
3. move the ledger out of `sending` (conditional write, `published = false`);
4. produce the outcome's records (status event, retry or dead letter) and await acks;
5. mark the row published; the caller then stores the Kafka offset.

Each step awaits only its own record, but the ledger and the producer serve the records
that reach a step together with one round trip (see `senders.ledger`): deliveries handled
concurrently cost one conditional batch per step, not one transaction each.

A crash after 3 and before 5 is repaired by the redelivered record (it re-publishes an
unpublished outcome; status ids are deterministic, so consumers drop the repeat).
A crash between 2 and 3 is the one window no design closes; see `_resolve_stale`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from infra.ratelimit import TokenBucket
from infra.retry import Backoff, retrying
from infra.retry import is_outage as is_outage
from schemas import codec
from schemas.channels import Outcome as StatusOutcome
from schemas.contract import Reason
from schemas.events import now_ms
from senders import metrics, status
from senders.breaker import CircuitBreaker
from senders.decisions import Kind, classify, reason_of
from senders.ledger import FINAL, UNCERTAIN_AFTER_CRASH, Ledger, LedgerRow, Outcome, Ref, State
from senders.providers.base import DeliveryError, Message, Provider
from senders.settings import SenderSettings

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


class Publisher(Protocol):
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


def _ms(v: Any) -> int | None:
    if v is None or isinstance(v, int):
        return v
    return int(v.timestamp() * 1000)


class DeliveryHandler:
    def __init__(
        self,
        *,
        settings: SenderSettings,
        ledger: Ledger,
        publisher: Publisher,
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
        self._local: dict[str, asyncio.Event] = {}
        # Claims of this process whose provider call started but whose outcome is unknown.
        self._called: set[str] = set()

    # -- entry ---------------------------------------------------------------------------

    async def handle(
        self,
        delivery: dict[str, Any],
        consumed_from: str,
        *,
        partition: int,
        redriven: bool = False,
    ) -> str:
        """Process one record to a durable outcome; returns it (state, or `duplicate`).

        `partition`: the Kafka partition index it came from, which locates its ledger row
        (`senders.ledger.Ref`). `redriven`: an operator sent this dead letter back
        (`herald dlq redrive`), which is the one way out of `dead_lettered`; every other
        final state is final."""
        did = delivery["delivery_id"]
        # The same delivery twice in this process (duplicate record): the second waits
        # for the first, then finds its outcome in the ledger.
        while (busy := self._local.get(did)) is not None:
            await busy.wait()
        done = self._local[did] = asyncio.Event()
        try:
            ref = Ref.of(delivery, partition)
            return await self._handle(delivery, ref, consumed_from, redriven)
        finally:
            del self._local[did]
            done.set()

    async def _handle(self, d: dict[str, Any], ref: Ref, consumed_from: str, redriven: bool) -> str:
        did, nid, attempt = ref.delivery_id, d["notification_id"], int(d.get("attempt") or 1)
        route = self.settings.routing.route(d["channel"])
        first = route.providers[0]
        pinned: str | None = None
        first_error: str | None = None
        # Wait for the rate limit before claiming, not after: a claim should live for as
        # short a time as possible, since a crash while it is held makes it uncertain.
        await self.buckets[first].acquire()
        while True:
            row = await self.ledger.claim(ref, nid, attempt, self.owner, first)
            if row is None:
                break
            if redriven and row.state == State.DEAD_LETTERED:
                if await self.ledger.reclaim(ref, nid, attempt, self.owner, first, row):
                    pinned = row.pinned_provider
                    break
                continue
            if row.state in FINAL:
                if not row.published:
                    await self._publish(d, ref, row, consumed_from)
                return self._count(d, row.provider, DUPLICATE)
            if row.state == State.RETRYING:
                if row.attempt < attempt:
                    if await self.ledger.reclaim(ref, nid, attempt, self.owner, first, row):
                        pinned, first_error = row.pinned_provider, row.first_error
                        break
                    continue
                if row.attempt == attempt and not row.published:
                    await self._publish(d, ref, row, consumed_from)
                return self._count(d, row.provider, DUPLICATE)
            # `sending`
            if row.attempt > attempt:
                return self._count(d, row.provider, DUPLICATE)
            if row.owner == self.owner and did not in self._called:
                # Our own claim from an earlier try that failed before any provider call.
                if await self.ledger.reclaim(ref, nid, attempt, self.owner, first, row):
                    pinned, first_error = row.pinned_provider, row.first_error
                    break
                continue
            resolved = await self._resolve_stale(d, ref, row, consumed_from)
            if resolved is not None:
                return resolved

        if (expires := _ms(d.get("expires_at"))) is not None and expires <= now_ms():
            return await self._finish(
                d, ref, attempt, Outcome(State.DROPPED, reason=EXPIRED), first
            )
        return await self._send(
            d,
            ref,
            attempt,
            route.providers,
            route.retry_ambiguous,
            pinned,
            first_error,
            consumed_from,
            prepaid=first,
        )

    async def _resolve_stale(
        self, d: dict[str, Any], ref: Ref, row: LedgerRow, consumed_from: str
    ) -> str | None:
        """Another sender holds the claim. Wait while it may be alive; once the claim is
        older than any send could take, its owner died somewhere between claiming and
        recording the outcome — maybe after the provider accepted. Resending could
        deliver twice, so herald resolves toward "never twice": dead-letter the delivery
        with `uncertain_after_crash` for an operator to review (redrive or not)."""
        stale_after = self.settings.retry.claim_stale_after_s
        updated = row.updated_at.timestamp() if row.updated_at else 0.0
        age = self._clock() - updated
        if age < stale_after:
            await self._sleep(min(1.0, stale_after - age))
            return None
        outcome = Outcome(
            State.DEAD_LETTERED,
            reason=UNCERTAIN_AFTER_CRASH,
            provider=row.provider,
            first_error=row.first_error or UNCERTAIN_AFTER_CRASH,
            last_error=UNCERTAIN_AFTER_CRASH,
            pinned_provider=row.pinned_provider,
        )
        if not await self.ledger.resolve_stale(ref, self.owner, row, outcome):
            return None  # somebody else moved it; look again
        log.warning(
            "stale claim dead-lettered",
            extra={"delivery_id": d["delivery_id"], "stale_owner": row.owner},
        )
        final = _row(outcome, row.attempt, self.owner)
        await self._publish(d, ref, final, consumed_from)
        return self._count(d, row.provider, final.state, final.reason)

    # -- sending -------------------------------------------------------------------------

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
    ) -> str:
        did, channel = d["delivery_id"], d["channel"]
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
            self._called.add(did)
            started = time.monotonic()
            try:
                # A timeout scope, not `wait_for`: no task per send.
                async with asyncio.timeout(self.settings.send_timeout_s):
                    result = await self.providers[name].send(message)
            except Exception as caught:
                exc = caught
                kind = classify(exc)
                metrics.PROVIDER_LATENCY.labels(name, kind.value).observe(
                    time.monotonic() - started
                )
            else:
                metrics.PROVIDER_LATENCY.labels(name, "ok").observe(time.monotonic() - started)
                breaker.record_success()
                outcome = Outcome(
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
                outcome = Outcome(
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

        def dead(reason: str) -> Outcome:
            return Outcome(
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
                d, ref, attempt, Outcome(State.DROPPED, reason=EXPIRED), current
            )
        outcome = Outcome(
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

    # -- outcome -------------------------------------------------------------------------

    async def _finish(
        self,
        d: dict[str, Any],
        ref: Ref,
        attempt: int,
        outcome: Outcome,
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
        row = _row(outcome, attempt, self.owner)
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
        metrics.DELIVERIES.labels(d["channel"], provider or "-", outcome).inc()
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


def _row(outcome: Outcome, attempt: int, owner: str) -> LedgerRow:
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
