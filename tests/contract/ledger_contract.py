"""One contract, every delivery ledger: what the sender runtime relies on.

`senders.handler` calls the `senders.ledger.Ledger` methods one delivery at a time; the
CQL ledger turns the calls made together into one conditional batch per ledger partition,
so the contract is checked both ways: one call at a time and many calls at once (one
batch, with conflicts to sort out). Each implementation's test module subclasses
`LedgerContract` and provides the `ledger` and `add_device` fixtures.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from senders.ledger import UNCERTAIN_AFTER_CRASH, Ledger, LedgerOutcome, LedgerRow, Ref, State

MINUTE = 29_400_000  # a minute since the epoch (late 2025)
AddDevice = Callable[[str, str, str], None]


def new_ref(slot: int = 0) -> Ref:
    return Ref(str(uuid.uuid4()), slot, MINUTE)


def delivery_of(ref: Ref) -> dict[str, str]:
    return {
        "notification_id": "n",
        "delivery_id": ref.delivery_id,
        "user_id": "u",
        "channel": "sms",
        "category": "transactional",
    }


SENT = LedgerOutcome(State.SENT, provider="twilio", provider_message_id="SM1")
UNCERTAIN = LedgerOutcome(State.DEAD_LETTERED, reason=UNCERTAIN_AFTER_CRASH)


class LedgerContract:
    @pytest.fixture
    def ledger(self) -> Ledger:
        raise NotImplementedError

    @pytest.fixture
    def add_device(self) -> AddDevice:
        raise NotImplementedError

    async def test_an_unknown_delivery_has_no_row(self, ledger: Ledger) -> None:
        assert await ledger.read(new_ref()) is None

    async def test_a_claim_creates_the_row_in_sending(self, ledger: Ledger) -> None:
        ref = new_ref()
        assert await ledger.claim(ref, "n", 1, "me", "twilio") is None
        row = await ledger.read(ref)
        assert row is not None
        assert (row.state, row.attempt, row.owner, row.provider, row.published) == (
            "sending",
            1,
            "me",
            "twilio",
            False,
        )
        assert row.updated_at is not None and row.updated_at.tzinfo is not None

    async def test_exactly_one_of_many_concurrent_claims_wins(self, ledger: Ledger) -> None:
        ref = new_ref()
        results = await asyncio.gather(
            *(ledger.claim(ref, "n", 1, f"owner-{i}", "twilio") for i in range(8))
        )
        assert results.count(None) == 1
        losers = [r for r in results if r is not None]
        assert {r.state for r in losers} == {"sending"}
        assert len({r.owner for r in losers}) == 1  # everybody sees the same winner

    async def test_only_the_owner_finishes_and_the_row_records_it(self, ledger: Ledger) -> None:
        ref = new_ref()
        assert await ledger.claim(ref, "n", 1, "me", "twilio") is None
        sent = LedgerOutcome(State.SENT, provider="vonage", provider_message_id="SM1")
        assert not await ledger.finish(ref, "someone-else", sent)
        assert await ledger.finish(ref, "me", sent)
        assert not await ledger.finish(ref, "me", sent)  # no longer `sending`
        row = await ledger.read(ref)
        assert row is not None
        assert (row.state, row.provider, row.provider_message_id, row.published) == (
            "sent",
            "vonage",
            "SM1",
            False,
        )
        await ledger.published(ref, delivery_of(ref), row)
        row = await ledger.read(ref)
        assert row is not None and row.published and row.state == "sent"
        again = await ledger.claim(ref, "n", 1, "other", "twilio")
        assert again is not None and again.state == "sent"

    async def test_the_provider_is_recorded_only_by_the_owner(self, ledger: Ledger) -> None:
        ref = new_ref()
        await ledger.claim(ref, "n", 1, "me", "twilio")
        assert not await ledger.set_provider(ref, "someone-else", "vonage")
        assert await ledger.set_provider(ref, "me", "vonage")
        row = await ledger.read(ref)
        assert row is not None and (row.state, row.provider) == ("sending", "vonage")
        await ledger.finish(ref, "me", SENT)
        assert not await ledger.set_provider(ref, "me", "twilio")  # no longer `sending`

    async def test_next_attempt_claims_a_retrying_row_once(self, ledger: Ledger) -> None:
        ref = new_ref()
        await ledger.claim(ref, "n", 1, "a", "smtp")
        retrying = LedgerOutcome(State.RETRYING, last_error="smtp:421", pinned_provider="smtp")
        assert await ledger.finish(ref, "a", retrying)
        row = await ledger.claim(ref, "n", 2, "b", "smtp")
        assert row is not None and row.state == "retrying" and row.pinned_provider == "smtp"
        assert await ledger.reclaim(ref, "n", 2, "b", "smtp", row)
        assert not await ledger.reclaim(ref, "n", 2, "c", "smtp", row)  # the row moved on
        now = await ledger.read(ref)
        assert now is not None
        assert (now.state, now.attempt, now.owner, now.published) == ("sending", 2, "b", False)

    async def test_a_reclaim_expecting_another_attempt_is_refused(self, ledger: Ledger) -> None:
        ref = new_ref()
        await ledger.claim(ref, "n", 1, "a", "smtp")
        await ledger.finish(ref, "a", LedgerOutcome(State.RETRYING, last_error="smtp:421"))
        stale = LedgerRow(State.RETRYING, 7)
        assert not await ledger.reclaim(ref, "n", 8, "b", "smtp", stale)

    async def test_stale_claim_is_resolved_once(self, ledger: Ledger) -> None:
        ref = new_ref()
        await ledger.claim(ref, "n", 1, "dead", "twilio")
        stale = await ledger.read(ref)
        assert stale is not None and stale.updated_at is not None
        results = await asyncio.gather(
            *(ledger.resolve_stale(ref, f"r{i}", stale, UNCERTAIN) for i in range(4))
        )
        assert results.count(True) == 1
        row = await ledger.read(ref)
        assert row is not None and (row.state, row.reason) == (
            "dead_lettered",
            "uncertain_after_crash",
        )
        # The dead owner, back from a pause, cannot overwrite the verdict.
        assert not await ledger.finish(ref, "dead", LedgerOutcome(State.SENT, provider="twilio"))

    async def test_only_an_uncertain_verdict_can_be_corrected(self, ledger: Ledger) -> None:
        ref = new_ref()
        await ledger.claim(ref, "n", 1, "slow", "twilio")
        stale = await ledger.read(ref)
        assert stale is not None
        assert await ledger.resolve_stale(ref, "other", stale, UNCERTAIN)
        sent = LedgerOutcome(State.SENT, provider="twilio", provider_message_id="SM9")
        assert await ledger.correct_uncertain(ref, "slow", sent)
        row = await ledger.read(ref)
        assert row is not None and (row.state, row.provider_message_id) == ("sent", "SM9")
        assert row.reason is None  # the verdict's reason went with it
        assert not await ledger.correct_uncertain(ref, "slow", sent)  # only from uncertain

    async def test_a_later_attempt_leaves_nothing_of_an_earlier_one(self, ledger: Ledger) -> None:
        ref = new_ref()
        await ledger.claim(ref, "n", 1, "a", "smtp")
        retrying = LedgerOutcome(
            State.RETRYING,
            reason="smtp:421",
            provider_message_id="m1",
            first_error="smtp:421",
            last_error="smtp:421",
            pinned_provider="smtp",
        )
        assert await ledger.finish(ref, "a", retrying)
        row = await ledger.read(ref)
        assert row is not None
        await ledger.published(ref, delivery_of(ref), row)
        assert await ledger.reclaim(ref, "n", 2, "b", "sendgrid", row)
        assert await ledger.finish(ref, "b", LedgerOutcome(State.SENT, provider="sendgrid"))
        row = await ledger.read(ref)
        assert row is not None
        assert (row.state, row.attempt, row.provider) == ("sent", 2, "sendgrid")
        left = (row.reason, row.provider_message_id, row.first_error, row.last_error)
        assert left == (None, None, None, None)
        assert row.pinned_provider is None

    async def test_a_dead_letter_for_another_reason_is_not_corrected(self, ledger: Ledger) -> None:
        ref = new_ref()
        await ledger.claim(ref, "n", 1, "me", "twilio")
        await ledger.finish(
            ref, "me", LedgerOutcome(State.DEAD_LETTERED, reason="retries_exhausted")
        )
        assert not await ledger.correct_uncertain(ref, "me", SENT)

    async def test_claims_made_together_where_some_rows_are_held(self, ledger: Ledger) -> None:
        """Claims on one ledger partition made together (one conditional batch): exactly
        the held rows are refused, with the holder's row; the rest are claimed."""
        taken = [new_ref(slot=1) for _ in range(3)]
        free = [new_ref(slot=1) for _ in range(20)]
        for ref in taken:
            assert await ledger.claim(ref, "n", 1, "other", "twilio") is None
        results = await asyncio.gather(
            *(ledger.claim(ref, "n", 1, "me", "twilio") for ref in [*free, *taken])
        )
        assert results[: len(free)] == [None] * len(free)
        held = results[len(free) :]
        assert all(r is not None and r.owner == "other" for r in held)
        finished = await asyncio.gather(
            *(ledger.finish(ref, "me", SENT) for ref in free),
            *(ledger.finish(ref, "me", SENT) for ref in taken),
        )
        assert finished == [True] * len(free) + [False] * len(taken)
        rows = await asyncio.gather(*(ledger.read(ref) for ref in [*free, *taken]))
        assert [r.state if r else None for r in rows] == ["sent"] * 20 + ["sending"] * 3

    async def test_different_transitions_made_together_are_each_judged_on_their_row(
        self, ledger: Ledger
    ) -> None:
        claimed, retrying, stale, uncertain = (new_ref(slot=2) for _ in range(4))
        for ref in (claimed, retrying, stale, uncertain):
            await ledger.claim(ref, "n", 1, "a", "twilio")
        await ledger.finish(retrying, "a", LedgerOutcome(State.RETRYING, last_error="twilio:503"))
        await ledger.resolve_stale(uncertain, "b", LedgerRow(State.SENDING, 1, "a"), UNCERTAIN)
        fresh = new_ref(slot=2)
        stale_row = await ledger.read(stale)
        retry_row = await ledger.read(retrying)
        assert stale_row is not None and retry_row is not None
        results = await asyncio.gather(
            ledger.claim(fresh, "n", 1, "c", "twilio"),
            ledger.set_provider(claimed, "a", "vonage"),
            ledger.reclaim(retrying, "n", 2, "c", "twilio", retry_row),
            ledger.resolve_stale(stale, "c", stale_row, UNCERTAIN),
            ledger.correct_uncertain(uncertain, "a", SENT),
            ledger.finish(claimed, "not-a", SENT),
        )
        assert results == [None, True, True, True, True, False]
        states = [await ledger.read(r) for r in (fresh, claimed, retrying, stale, uncertain)]
        assert [(s.state, s.owner) if s else None for s in states] == [
            ("sending", "c"),
            ("sending", "a"),
            ("sending", "c"),
            ("dead_lettered", "c"),
            ("sent", "a"),
        ]

    async def test_writes_to_one_row_made_together_apply_in_order(self, ledger: Ledger) -> None:
        """Two transitions of one row in flight at once: the second is judged on the row
        the first left, not on the row before both."""
        ref = new_ref(slot=3)
        await ledger.claim(ref, "n", 1, "me", "twilio")
        retrying = LedgerOutcome(State.RETRYING, last_error="twilio:503")
        finished, reclaimed = await asyncio.gather(
            ledger.finish(ref, "me", retrying),
            ledger.reclaim(ref, "n", 2, "me", "twilio", LedgerRow(State.RETRYING, 1)),
        )
        assert (finished, reclaimed) == (True, True)
        row = await ledger.read(ref)
        assert row is not None and (row.state, row.attempt) == ("sending", 2)

    async def test_a_redrive_that_ends_as_before_is_not_taken_for_published(
        self, ledger: Ledger
    ) -> None:
        # Dead-lettered and published; an operator redrives it (same attempt) and it is
        # dead-lettered again for the same reason: until that outcome's records are out,
        # the row must not read as published, or its new dead letter would never be made.
        ref = new_ref()
        failed = LedgerOutcome(State.DEAD_LETTERED, reason="retries_exhausted")
        await ledger.claim(ref, "n", 1, "me", "twilio")
        await ledger.finish(ref, "me", failed)
        row = await ledger.read(ref)
        assert row is not None
        await ledger.published(ref, delivery_of(ref), row)
        row = await ledger.read(ref)
        assert row is not None and row.published
        assert await ledger.reclaim(ref, "n", 1, "operator", "twilio", row)
        assert await ledger.finish(ref, "operator", failed)
        again = await ledger.read(ref)
        assert again is not None and (again.state, again.attempt) == ("dead_lettered", 1)
        assert not again.published
        await ledger.published(ref, delivery_of(ref), again)
        final = await ledger.read(ref)
        assert final is not None and final.published

    async def test_publishing_flags_only_that_row(self, ledger: Ledger) -> None:
        one, other = new_ref(slot=4), new_ref(slot=4)
        for ref in (one, other):
            await ledger.claim(ref, "n", 1, "me", "twilio")
            await ledger.finish(ref, "me", SENT)
        row = await ledger.read(one)
        assert row is not None
        await ledger.published(one, delivery_of(one), row)
        flags = [await ledger.read(r) for r in (one, other)]
        assert [f.published if f else None for f in flags] == [True, False]

    async def test_device_is_deleted_only_while_it_has_the_rejected_token(
        self, ledger: Ledger, add_device: AddDevice
    ) -> None:
        user, device = f"user-{uuid.uuid4()}", "dev-1"
        add_device(user, device, "fresh-token")
        assert not await ledger.delete_device(user, device, "old-token")
        assert await ledger.delete_device(user, device, "fresh-token")
        assert not await ledger.delete_device(user, device, "fresh-token")  # already gone
