"""The ledger's conditional writes on the real Cassandra, one at a time and batched."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session
from cassandra.query import BatchStatement

from infra.cassandra import connect
from infra.settings import CassandraSettings
from senders.ledger import CassandraLedger, Outcome, Ref, State
from tests.conftest import CASSANDRA_PORT

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    s = connect(CassandraSettings(port=CASSANDRA_PORT))
    yield s
    s.cluster.shutdown()


@pytest.fixture(scope="module")
def ledger(session: Session) -> CassandraLedger:
    return CassandraLedger(session)


def new_id(slot: int = 0) -> Ref:
    return Ref(str(uuid.uuid4()), slot, 490_000)


async def test_exactly_one_of_many_concurrent_claims_wins(ledger: CassandraLedger) -> None:
    did = new_id()
    results = await asyncio.gather(
        *(ledger.claim(did, "n", 1, f"owner-{i}", "twilio") for i in range(8))
    )
    winners = [r for r in results if r is None]
    assert len(winners) == 1
    losers = [r for r in results if r is not None]
    assert {r.state for r in losers} == {"sending"}
    assert len({r.owner for r in losers}) == 1  # everybody sees the same winner


async def test_only_the_owner_finishes_and_the_row_records_it(ledger: CassandraLedger) -> None:
    did = new_id()
    assert await ledger.claim(did, "n", 1, "me", "twilio") is None
    sent = Outcome(State.SENT, provider="vonage", provider_message_id="SM1")
    assert not await ledger.finish(did, "someone-else", sent)
    assert await ledger.finish(did, "me", sent)
    assert not await ledger.finish(did, "me", sent)  # no longer `sending`
    row = await ledger.read(did)
    assert row is not None
    assert (row.state, row.provider, row.provider_message_id, row.published) == (
        "sent",
        "vonage",
        "SM1",
        False,
    )
    delivery = {
        "notification_id": "n",
        "delivery_id": did.delivery_id,
        "user_id": "u",
        "channel": "sms",
        "category": "transactional",
    }
    await ledger.published(did, delivery, row)
    row = await ledger.read(did)
    assert row is not None and row.published
    again = await ledger.claim(did, "n", 1, "other", "twilio")
    assert again is not None and again.state == "sent"


async def test_next_attempt_claims_a_retrying_row_once(ledger: CassandraLedger) -> None:
    did = new_id()
    await ledger.claim(did, "n", 1, "a", "smtp")
    assert await ledger.finish(
        did, "a", Outcome(State.RETRYING, last_error="smtp:421", pinned_provider="smtp")
    )
    row = await ledger.claim(did, "n", 2, "b", "smtp")
    assert row is not None and row.state == "retrying" and row.pinned_provider == "smtp"
    assert await ledger.reclaim(did, "n", 2, "b", "smtp", row)
    assert not await ledger.reclaim(did, "n", 2, "c", "smtp", row)  # the row moved on
    now = await ledger.read(did)
    assert now is not None and (now.state, now.attempt, now.owner) == ("sending", 2, "b")


async def test_stale_claim_is_resolved_once(ledger: CassandraLedger) -> None:
    did = new_id()
    await ledger.claim(did, "n", 1, "dead", "twilio")
    stale = await ledger.read(did)
    assert stale is not None and stale.updated_at is not None
    uncertain = Outcome(State.DEAD_LETTERED, reason="uncertain_after_crash")
    results = await asyncio.gather(
        *(ledger.resolve_stale(did, f"r{i}", stale, uncertain) for i in range(4))
    )
    assert results.count(True) == 1
    # The dead owner, back from a pause, cannot overwrite the verdict.
    assert not await ledger.finish(did, "dead", Outcome(State.SENT, provider="twilio"))


async def test_device_is_deleted_only_while_it_has_the_rejected_token(
    ledger: CassandraLedger, session: Session
) -> None:
    user, device = f"user-{uuid.uuid4()}", "dev-1"
    session.execute(
        "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
        " VALUES (%s, %s, 'ios', 'fresh-token')",
        (user, device),
    )
    assert not await ledger.delete_device(user, device, "old-token")
    assert await ledger.delete_device(user, device, "fresh-token")
    left = session.execute(
        "SELECT * FROM devices_by_user WHERE user_id = %s AND device_id = %s", (user, device)
    ).one()
    assert left is None


async def test_only_an_uncertain_verdict_can_be_corrected(ledger: CassandraLedger) -> None:
    did = new_id()
    await ledger.claim(did, "n", 1, "slow", "twilio")
    stale = await ledger.read(did)
    assert stale is not None
    uncertain = Outcome(State.DEAD_LETTERED, reason="uncertain_after_crash")
    assert await ledger.resolve_stale(did, "other", stale, uncertain)
    sent = Outcome(State.SENT, provider="twilio", provider_message_id="SM9")
    assert await ledger.correct_uncertain(did, "slow", sent)
    row = await ledger.read(did)
    assert row is not None and (row.state, row.provider_message_id) == ("sent", "SM9")
    assert not await ledger.correct_uncertain(did, "slow", sent)  # only from uncertain


async def test_a_batch_of_claims_is_one_transaction_and_a_conflict_is_sorted_out(
    ledger: CassandraLedger, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims made together go as one conditional batch; when another sender already holds
    some of the rows, exactly those are refused (with the holder's row), the rest claimed."""
    taken = [new_id(slot=1) for _ in range(3)]
    free = [Ref(str(uuid.uuid4()), 1, taken[0].hour) for _ in range(20)]
    for ref in taken:
        assert await ledger.claim(ref, "n", 1, "other", "twilio") is None
    trips = count_round_trips(session, monkeypatch)
    results = await asyncio.gather(
        *(ledger.claim(ref, "n", 1, "me", "twilio") for ref in [*free, *taken])
    )
    assert results[: len(free)] == [None] * len(free)
    held = results[len(free) :]
    assert all(r is not None and r.owner == "other" for r in held)
    finished = await asyncio.gather(
        *(ledger.finish(ref, "me", Outcome(State.SENT, provider="twilio")) for ref in free),
        *(ledger.finish(ref, "me", Outcome(State.SENT, provider="twilio")) for ref in taken),
    )
    assert finished == [True] * len(free) + [False] * len(taken)
    # Per step: the batch, refused; one read of its rows; the batch again without the taken.
    assert trips == ["batch", "read", "batch"] * 2


def count_round_trips(session: Session, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the session sends from now on: a `batch`, or a `read` (any other request)."""
    trips: list[str] = []
    real = session.execute_async

    def counted(query: object, *args: object, **kw: object) -> object:
        trips.append("batch" if isinstance(query, BatchStatement) else "read")
        return real(query, *args, **kw)

    monkeypatch.setattr(session, "execute_async", counted)
    return trips
