"""The ledger contract on the Cassandra ledger the senders run (real Cassandra)."""

from __future__ import annotations

import pytest
from cassandra.cluster import Session

from senders.ledger import CassandraLedger
from tests.ledger_contract import LedgerContract

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def ledger(cassandra: Session) -> CassandraLedger:
    return CassandraLedger(cassandra)


class TestCassandraLedger(LedgerContract):
    async def put_device(
        self, ledger: CassandraLedger, user_id: str, device_id: str, token: str
    ) -> None:  # type: ignore[override]
        ledger._session.execute(
            "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
            " VALUES (%s, %s, 'ios', %s)",
            (user_id, device_id, token),
        )
