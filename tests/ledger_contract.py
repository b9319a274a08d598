"""What every delivery ledger must do: the conditions that make "never twice" hold.

`LedgerContract` is run against each implementation: the in-memory one the unit tests use
(`tests/unit/senders/test_ledger_contract.py`) and the Cassandra one the senders run
(`tests/integration/senders/test_ledger_contract.py`). A subclass provides the `ledger`
fixture and `put_device`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from senders.ledger import HOUR_MS, UNCERTAIN_AFTER_CRASH, Ledger, LedgerRow, Outcome, Ref, State


def ref(slot: int = 0) -> Ref:
    return Ref(f"contract-{uuid.uuid4()}", slot, int(time.time() * 1000) // HOUR_MS)


def delivery_of(r: Ref) -> dict[str, Any]:
    return {
        "delivery_id": r.delivery_id,
        "notification_id": f"n-{r.delivery_id}",
        "user_id": "contract-user",
        "channel": "email",
        "category": "transactional",
    }


SENT = Outcome(State.SENT, provider="smtp", provider_message_id="m-1")


class LedgerContract:
    async def put_device(self, ledger: Ledger, user_id: str, device_id: str, token: str) -> None:
        raise NotImplementedError

    async def test_the_first_claim_wins_and_the_second_sees_the_row(self, ledger: Ledger) -> None:
        r = ref()
        assert await ledger.claim(r, "n", 1, "a", "smtp") is None
        row = await ledger.claim(r, "n", 1, "b", "smtp")
        assert row is not None
        assert (row.state, row.owner, row.attempt, row.provider) == ("sending", "a", 1, "smtp")

    async def test_concurrent_claims_of_one_delivery_have_exactly_one_winner(
        self, ledger: Ledger
    ) -> None:
        r = ref()
        results = await asyncio.gather(
            *(ledger.claim(r, "n", 1, f"owner-{i}", "smtp") for i in range(8))
        )
        assert sum(1 for x in results if x is None) == 1
        winner = next(f"owner-{i}" for i, x in enumerate(results) if x is None)
        assert all(x is None or x.owner == winner for x in results)

    async def test_claims_of_many_deliveries_together_are_answered_each(
        self, ledger: Ledger
    ) -> None:
        refs = [ref(slot=i % 3) for i in range(60)]
        first = await asyncio.gather(*(ledger.claim(r, "n", 1, "a", "smtp") for r in refs))
        assert first == [None] * 60
        second = await asyncio.gather(*(ledger.claim(r, "n", 1, "b", "smtp") for r in refs))
        assert all(row is not None and row.owner == "a" for row in second)

    async def test_only_the_owner_finishes_and_only_once(self, ledger: Ledger) -> None:
        r = ref()
        await ledger.claim(r, "n", 1, "a", "smtp")
        assert not await ledger.finish(r, "b", SENT)
        assert await ledger.finish(r, "a", SENT)
        assert not await ledger.finish(r, "a", Outcome(State.FAILED, reason="x"))
        row = await ledger.read(r)
        assert row is not None
        assert (row.state, row.provider, row.provider_message_id, row.published) == (
            "sent",
            "smtp",
            "m-1",
            False,
        )

    async def test_set_provider_needs_the_claim(self, ledger: Ledger) -> None:
        r = ref()
        await ledger.claim(r, "n", 1, "a", "smtp")
        assert not await ledger.set_provider(r, "b", "sendgrid")
        assert await ledger.set_provider(r, "a", "sendgrid")
        row = await ledger.read(r)
        assert row is not None and row.provider == "sendgrid"
        await ledger.finish(r, "a", SENT)
        assert not await ledger.set_provider(r, "a", "smtp")  # no longer sending

    async def test_reclaim_moves_a_retrying_row_on_only_from_the_state_seen(
        self, ledger: Ledger
    ) -> None:
        r = ref()
        await ledger.claim(r, "n", 1, "a", "smtp")
        await ledger.finish(r, "a", Outcome(State.RETRYING, reason="smtp:451"))
        seen = await ledger.read(r)
        assert seen is not None and (seen.state, seen.attempt) == ("retrying", 1)
        assert await ledger.reclaim(r, "n", 2, "b", "smtp", seen)
        assert not await ledger.reclaim(r, "n", 2, "c", "smtp", seen)  # seen is stale now
        row = await ledger.read(r)
        assert row is not None and (row.state, row.attempt, row.owner) == ("sending", 2, "b")

    async def test_a_stale_claim_is_resolved_once_and_the_owner_can_correct_it(
        self, ledger: Ledger
    ) -> None:
        r = ref()
        await ledger.claim(r, "n", 1, "dead", "smtp")
        held = await ledger.read(r)
        assert held is not None
        other = LedgerRow(state=held.state, attempt=held.attempt + 1, owner=held.owner)
        uncertain = Outcome(State.DEAD_LETTERED, reason=UNCERTAIN_AFTER_CRASH, provider="smtp")
        assert not await ledger.resolve_stale(r, "b", other, uncertain)  # not the row held
        assert await ledger.resolve_stale(r, "b", held, uncertain)
        assert not await ledger.resolve_stale(r, "c", held, uncertain)
        # The stalled owner finds its claim gone, but it knows the provider took it.
        assert not await ledger.finish(r, "dead", SENT)
        assert await ledger.correct_uncertain(r, "dead", SENT)
        assert not await ledger.correct_uncertain(r, "dead", SENT)
        row = await ledger.read(r)
        assert row is not None and (row.state, row.owner) == ("sent", "dead")

    async def test_published_is_flagged_and_a_new_claim_clears_it(self, ledger: Ledger) -> None:
        r = ref()
        await ledger.claim(r, "n", 1, "a", "smtp")
        await ledger.finish(r, "a", Outcome(State.RETRYING, reason="smtp:451"))
        row = await ledger.read(r)
        assert row is not None and not row.published
        await ledger.published(r, delivery_of(r), row)
        row = await ledger.read(r)
        assert row is not None and row.published
        assert await ledger.reclaim(r, "n", 2, "a", "smtp", row)
        again = await ledger.read(r)
        assert again is not None and not again.published

    async def test_a_device_is_deleted_only_with_the_token_rejected(self, ledger: Ledger) -> None:
        user, device = f"contract-user-{uuid.uuid4()}", "d-1"
        await self.put_device(ledger, user, device, "tok-new")
        assert not await ledger.delete_device(user, device, "tok-old")  # re-registered since
        assert await ledger.delete_device(user, device, "tok-new")
        assert not await ledger.delete_device(user, device, "tok-new")

    async def test_reading_an_unknown_delivery_is_none(self, ledger: Ledger) -> None:
        assert await ledger.read(ref()) is None
