"""The terminal side going up: outbox table, POS-facing write API, and the relay."""

from cajasync.core.db import configure_pos_engine, pos_engine, reading
from cajasync.core.identity import TerminalIdentity, load_identity, save_identity
from outbox.orm import track
from outbox.record import Recorded, record, record_new_version, record_weekly_file

__all__ = [
    "Recorded",
    "TerminalIdentity",
    "configure_pos_engine",
    "load_identity",
    "pos_engine",
    "reading",
    "record",
    "record_new_version",
    "record_weekly_file",
    "save_identity",
    "track",
]
