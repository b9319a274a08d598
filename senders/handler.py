"""What happens to one delivery record: claim, send, decide, publish. No Kafka consuming here.

The order of writes is what makes a redelivered record harmless:

1. claim the delivery in the ledger (conditional write) — only one sender can hold it;
2. call the provider (failing over only where the primary certainly did not accept);
3. move the ledger out of `sending` (conditional write);
4. produce the outcome's records (status event, retry or dead letter) and await acks;
5. write the outcome to the notification log, which marks it published; the caller then
   stores the Kafka offset.

Each step awaits only its own record, but the ledger and the producer serve the records
that reach a step together with one round trip (see `senders.ledger`): deliveries handled
concurrently cost one conditional batch per step, not one transaction each.

A crash after 3 and before 5 is repaired by the redelivered record (it re-publishes an
unpublished outcome; status ids are deterministic, so consumers drop the repeat).
A crash between 2 and 3 is the one window no design closes; see `_resolve_stale`.

The steps live in layers: the claim here (`DeliveryHandler`), the provider call and
failover in `senders.sending`, the outcome and its records in `senders.outputs`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from schemas.events import now_ms
from senders.ledger import (
    FINAL,
    UNCERTAIN_AFTER_CRASH,
    LedgerOutcome,
    LedgerRow,
    Ref,
    State,
)
from senders.outputs import DUPLICATE, EXPIRED, RecordSink, Stopping, _ms, ledger_row
from senders.sending import Room, Sending

log = logging.getLogger(__name__)

__all__ = ["DeliveryHandler", "RecordSink", "Stopping"]


class DeliveryHandler(Sending):
    """One delivery record to a durable outcome: claim, send, decide, publish."""

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
        # Wait for the rate limit and for room at the provider before claiming, not after:
        # a claim should live for as short a time as possible, since a crash while it is
        # held makes it uncertain.
        await self.buckets[first].acquire()
        room = Room()
        await room.take(self.rooms.get(first))
        try:
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
                room.release()  # waiting out another sender's claim holds no room
                resolved = await self._resolve_stale(d, ref, row, consumed_from)
                if resolved is not None:
                    return resolved
                await room.take(self.rooms.get(first))

            if (expires := _ms(d.get("expires_at"))) is not None and expires <= now_ms():
                return await self._finish(
                    d, ref, attempt, LedgerOutcome(State.DROPPED, reason=EXPIRED), first
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
                room=room,
            )
        finally:
            room.release()

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
        outcome = LedgerOutcome(
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
        final = ledger_row(outcome, row.attempt, self.owner)
        await self._publish(d, ref, final, consumed_from)
        return self._count(d, row.provider, final.state, final.reason)
