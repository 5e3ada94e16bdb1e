"""The server store's tables (SQLite or PostgreSQL)."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

metadata = sa.MetaData()

APPLIED: Final = "applied"  # this version is (or was) the op's current version
STALE: Final = "stale"  # an older version that arrived after a newer one: changes nothing
REJECTED: Final = "rejected"  # its terminal's operation, failing validation; see reason

# One row per (op_id, version) ever received from its own terminal: the dedup/tracking row
# of the inbox, holding that terminal's seq.
received = sa.Table(
    "inbox_received",
    metadata,
    sa.Column("op_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("digest", sa.String(64)),  # sha256 of the first copy; NULL before s0004
    sa.UniqueConstraint("terminal", "seq", name="uq_inbox_received_terminal_seq"),
)

# The current state of every operation: the highest version received wins.
operations = sa.Table(
    "server_operations",
    metadata,
    sa.Column("op_id", sa.String(36), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("amount", sa.Numeric(16, 2)),  # sale total, payment amount, Z total
    sa.Column("voided", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("payload", sa.Text, nullable=False),  # the operation as JSON
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_server_operations_terminal_topic", "terminal", "topic"),
)

# Per terminal: the highest seq such that every seq up to it is held.
progress = sa.Table(
    "inbox_progress",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("contiguous_seq", sa.Integer, nullable=False),
    sa.Column("max_seq", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

PARTIAL: Final = "partial"  # some chunks of the file are still missing
COMPLETE: Final = "complete"  # reassembled; size and sha256 match
CORRUPT: Final = "corrupt"  # reassembled or checked and found wrong; see reason

# The current version of every weekly file chunk, without its data (that is in the payload).
weekly_chunks = sa.Table(
    "server_weekly_chunks",
    metadata,
    sa.Column("op_id", sa.String(36), primary_key=True),
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("week", sa.String(8), nullable=False),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("chunk_index", sa.Integer, nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Index("ix_server_weekly_chunks_file", "terminal", "week", "file_name", "sha256"),
)

# One row per weekly file (terminal, week, name, announced sha256), reassembled when complete.
weekly_files = sa.Table(
    "server_weekly_files",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("week", sa.String(8), primary_key=True),
    sa.Column("file_name", sa.String(255), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("chunks_held", sa.Integer, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("content", sa.LargeBinary),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Per terminal, every database (incarnation) it had: the current one and where it started,
# those it replaced and where they ended, and copies that were never registered.
# inbox/store/incarnations.py holds the rules.
incarnations = sa.Table(
    "inbox_incarnations",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("incarnation", sa.String(36), primary_key=True),
    sa.Column("status", sa.String(12), nullable=False),  # current, superseded, unregistered
    sa.Column("start_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("end_seq", sa.Integer),  # superseded: its successor continued after this seq
    sa.Column("successor", sa.String(36)),
    sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),  # copy ops refused
    sa.Column("registered_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Seqs of a terminal recorded lost: still missing, long after a rebuilt or recovered till
# continued after `restart_seq` (as `incarnation`). A real operation that arrives for one
# takes it back (the range is split). inbox/store/lost.py holds the rules.
lost = sa.Table(
    "inbox_lost",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("from_seq", sa.Integer, primary_key=True),
    sa.Column("to_seq", sa.Integer, nullable=False),
    sa.Column("restart_seq", sa.Integer, nullable=False),
    sa.Column("incarnation", sa.String(36), nullable=False),
    sa.Column("lost_at", sa.DateTime(timezone=True), nullable=False),
)

# Per terminal, its first open gap as server ingest last saw it once it asked for it
# (inbox/gaps.py): since when, how many times asked, when last. For `server stats`.
gaps = sa.Table(
    "inbox_gaps",
    metadata,
    sa.Column("terminal", sa.String(32), primary_key=True),
    sa.Column("from_seq", sa.Integer, nullable=False),
    sa.Column("to_seq", sa.Integer, nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("asked", sa.Integer, nullable=False),
    sa.Column("asked_at", sa.DateTime(timezone=True)),
)
