"""The server store's tables (SQLite or PostgreSQL)."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

metadata = sa.MetaData()

APPLIED: Final = "applied"  # this version is (or was) the op's current version
STALE: Final = "stale"  # an older version that arrived after a newer one: changes nothing
REJECTED: Final = "rejected"  # failed decoding or validation; see reason

# One row per (op_id, version) ever received: the dedup/tracking row of the inbox.
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
