"""The ledger contract against the in-memory ledger the unit tests use."""

from __future__ import annotations

import pytest

from senders.ledger import Ledger
from tests.contract.ledger_contract import AddDevice, LedgerContract
from tests.unit.senders.fakes import MemoryLedger

pytestmark = pytest.mark.asyncio(loop_scope="session")


class TestMemoryLedger(LedgerContract):
    @pytest.fixture
    def memory(self) -> MemoryLedger:
        return MemoryLedger()

    @pytest.fixture
    def ledger(self, memory: MemoryLedger) -> Ledger:
        return memory

    @pytest.fixture
    def add_device(self, memory: MemoryLedger) -> AddDevice:
        def add(user_id: str, device_id: str, token: str) -> None:
            memory.devices[(user_id, device_id)] = token

        return add
