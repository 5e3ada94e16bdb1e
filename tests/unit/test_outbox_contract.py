"""The terminal outbox contract on the in-memory adapter (no database)."""

from __future__ import annotations

import pytest

from outbox.outbox_store import MemoryOutboxStore, OutboxStore
from tests.contracts.outbox_contract import TERMINAL, OutboxContract


class TestMemoryOutbox(OutboxContract):
    @pytest.fixture
    def store(self) -> MemoryOutboxStore:
        return MemoryOutboxStore(TERMINAL)

    def settle(self, store: OutboxStore, seq: int, state: str) -> None:
        assert isinstance(store, MemoryOutboxStore)
        store.settle(seq, state)
