"""The terminal outbox: one port (`base`), a SQLAlchemy adapter (`sql`) and an in-memory one."""

from outbox.store.base import OutboxStore, PendingOp
from outbox.store.memory import MemoryOutboxStore
from outbox.store.sql import SqlOutboxStore

__all__ = ["MemoryOutboxStore", "OutboxStore", "PendingOp", "SqlOutboxStore"]
