"""The ledger contract on the in-memory ledger the unit tests use."""

from __future__ import annotations

import pytest

from tests.ledger_contract import LedgerContract
from tests.unit.senders.fakes import MemoryLedger


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


class TestMemoryLedger(LedgerContract):
    async def put_device(
        self, ledger: MemoryLedger, user_id: str, device_id: str, token: str
    ) -> None:  # type: ignore[override]
        ledger.devices[(user_id, device_id)] = token
