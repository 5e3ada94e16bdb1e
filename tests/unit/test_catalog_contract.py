"""The server catalog contract on the in-memory adapter (no database)."""

from __future__ import annotations

import pytest

from outbox.catalog_store import MemoryCatalogStore
from tests.contracts.catalog_contract import CatalogContract


class TestMemoryCatalog(CatalogContract):
    @pytest.fixture
    def store(self) -> MemoryCatalogStore:
        return MemoryCatalogStore()
