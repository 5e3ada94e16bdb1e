"""The replica contract on the in-memory adapter (no database)."""

from __future__ import annotations

import pytest

from inbox.replica_store import MemoryReplicaStore
from tests.contracts.replica_contract import ReplicaContract


class TestMemoryReplica(ReplicaContract):
    @pytest.fixture
    def store(self) -> MemoryReplicaStore:
        return MemoryReplicaStore()
