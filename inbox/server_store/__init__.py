"""The server store: one port (`base`), a SQLAlchemy adapter (`sql`) and an in-memory one."""

from inbox.server_store.base import (
    Accepted,
    Gap,
    Incoming,
    Invalid,
    Rejection,
    ServerStore,
    TerminalStats,
    Unreadable,
    Verdict,
    WeeklyFile,
)
from inbox.server_store.memory import MemoryServerStore
from inbox.server_store.sql import SqlServerStore

__all__ = [
    "Accepted",
    "Gap",
    "Incoming",
    "Invalid",
    "MemoryServerStore",
    "Rejection",
    "ServerStore",
    "SqlServerStore",
    "TerminalStats",
    "Unreadable",
    "Verdict",
    "WeeklyFile",
]
