"""The server store contract on the in-memory adapter (no database)."""

from __future__ import annotations

import pytest

from inbox.server_store import MemoryServerStore, ServerStore
from tests.contracts.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> ServerStore:
        return MemoryServerStore()
