"""The replica: one port (`base`), a SQLAlchemy adapter (`sql`) and an in-memory one."""

from inbox.replica_store.base import ReplicaStore
from inbox.replica_store.memory import MemoryReplicaStore
from inbox.replica_store.sql import SqlReplicaStore

__all__ = ["MemoryReplicaStore", "ReplicaStore", "SqlReplicaStore"]
