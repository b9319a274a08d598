"""The ledger contract on the real Cassandra, and what the CQL ledger adds: round trips."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session
from cassandra.query import BatchStatement

from infra.cassandra import connect
from infra.settings import CassandraSettings
from senders.ledger import CassandraLedger, Ledger, LedgerOutcome, Ref, State
from tests.conftest import CASSANDRA_PORT
from tests.contract.ledger_contract import MINUTE, AddDevice, LedgerContract, new_ref

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    s = connect(CassandraSettings(port=CASSANDRA_PORT))
    yield s
    s.cluster.shutdown()


@pytest.fixture(scope="module")
def cql_ledger(session: Session) -> CassandraLedger:
    return CassandraLedger(session)


class TestCassandraLedger(LedgerContract):
    @pytest.fixture
    def ledger(self, cql_ledger: CassandraLedger) -> Ledger:
        return cql_ledger

    @pytest.fixture
    def add_device(self, session: Session) -> AddDevice:
        def add(user_id: str, device_id: str, token: str) -> None:
            session.execute(
                "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
                " VALUES (%s, %s, 'ios', %s)",
                (user_id, device_id, token),
            )

        return add


async def test_a_batch_of_claims_is_one_transaction_and_a_conflict_costs_one_read(
    cql_ledger: CassandraLedger, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims made together go as one conditional batch; refused because another sender
    holds some rows, they cost one read of the rows and one more batch, not a trip each."""
    taken = [new_ref(slot=1) for _ in range(3)]
    free = [Ref(str(uuid.uuid4()), 1, MINUTE) for _ in range(20)]
    for ref in taken:
        assert await cql_ledger.claim(ref, "n", 1, "other", "twilio") is None
    trips = count_round_trips(session, monkeypatch)
    await asyncio.gather(
        *(cql_ledger.claim(ref, "n", 1, "me", "twilio") for ref in [*free, *taken])
    )
    await asyncio.gather(
        *(
            cql_ledger.finish(ref, "me", LedgerOutcome(State.SENT, provider="twilio"))
            for ref in free
        ),
        *(
            cql_ledger.finish(ref, "me", LedgerOutcome(State.SENT, provider="twilio"))
            for ref in taken
        ),
    )
    # Per step: the batch, refused; one read of its rows; the batch again without the taken.
    assert trips == ["batch", "read", "batch"] * 2


async def test_finishes_linger_to_share_a_round_and_a_claim_does_not_wait_for_them(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = CassandraLedger(session, linger_s=10.0)
    slot = 2
    first, second, third = (new_ref(slot=slot) for _ in range(3))
    for ref in (first, second):
        assert await ledger.claim(ref, "n", 1, "me", "twilio") is None
    trips = count_round_trips(session, monkeypatch)
    sent = LedgerOutcome(State.SENT, provider="twilio")
    finishes = [asyncio.create_task(ledger.finish(first, "me", sent))]
    await asyncio.sleep(0.05)
    finishes.append(asyncio.create_task(ledger.finish(second, "me", sent)))
    await asyncio.sleep(0.05)
    assert trips == []  # both finishes wait for company, up to 10 s
    # A claim may not wait: its round goes now and carries the finishes with it.
    assert await asyncio.wait_for(ledger.claim(third, "n", 1, "me", "twilio"), 5.0) is None
    assert await asyncio.wait_for(asyncio.gather(*finishes), 5.0) == [True, True]
    assert trips == ["batch"]
    assert (await ledger.read(first)) is not None
    assert (await ledger.read(first)).state == State.SENT  # type: ignore[union-attr]


async def test_without_linger_each_finish_goes_in_its_own_round(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = CassandraLedger(session)
    first, second = new_ref(slot=2), new_ref(slot=2)
    for ref in (first, second):
        assert await ledger.claim(ref, "n", 1, "me", "twilio") is None
    trips = count_round_trips(session, monkeypatch)
    sent = LedgerOutcome(State.SENT, provider="twilio")
    finishing = asyncio.create_task(ledger.finish(first, "me", sent))
    await asyncio.sleep(0.05)
    assert len(trips) == 1  # gone at once (one write: a statement, not a batch)
    assert await ledger.finish(second, "me", sent) is True
    assert await finishing is True
    assert len(trips) == 2


def count_round_trips(session: Session, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the session sends from now on: a `batch`, or a `read` (any other request)."""
    trips: list[str] = []
    real = session.execute_async

    def counted(query: object, *args: object, **kw: object) -> object:
        trips.append("batch" if isinstance(query, BatchStatement) else "read")
        return real(query, *args, **kw)

    monkeypatch.setattr(session, "execute_async", counted)
    return trips
