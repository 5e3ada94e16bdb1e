"""The terminal outbox: one port (`base`), a SQLAlchemy adapter (`sql`) and an in-memory one."""

from outbox.outbox_store.base import OutboxStore, PendingOp
from outbox.outbox_store.memory import MemoryOutboxStore
from outbox.outbox_store.sql import SqlOutboxStore

__all__ = ["MemoryOutboxStore", "OutboxStore", "PendingOp", "SqlOutboxStore"]
