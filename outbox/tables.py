"""The terminal's tables, living in the POS's own SQLite database (hence the prefix)."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

metadata = sa.MetaData()

PENDING: Final = "pending"
SENT: Final = "sent"
ACKED: Final = "acked"
REJECTED: Final = "rejected"
STATES: Final[tuple[str, ...]] = (PENDING, SENT, ACKED, REJECTED)

terminal = sa.Table(
    "cajasync_terminal",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1: one identity per database
    sa.Column("terminal", sa.String(32), nullable=False),
    sa.Column("location", sa.String(32), nullable=False),
    sa.Column("pos", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # A random id of this database, new at every `terminal init` and `terminal recover`,
    # stamped on every operation (OpEnvelope.incarnation).
    sa.Column("incarnation", sa.String(36)),
)

outbox = sa.Table(
    "cajasync_outbox",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("op_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("sent_at", sa.Float),  # epoch seconds of the broker confirm
    sa.Column("settled_at", sa.Float),  # epoch seconds of the server receipt
    sa.UniqueConstraint("op_id", "version", name="uq_cajasync_outbox_op_version"),
    sa.Index("ix_cajasync_outbox_state_seq", "state", "seq"),
)
