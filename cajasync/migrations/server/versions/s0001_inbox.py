"""server inbox: dedup rows, operations, per-terminal progress

Revision ID: s0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "s0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_received",
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
    op.create_table(
        "server_operations",
        sa.Column("op_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("terminal", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("topic", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.Numeric(16, 2)),
        sa.Column("voided", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_server_operations_terminal_topic", "server_operations", ["terminal", "topic"]
    )
    op.create_table(
        "inbox_progress",
        sa.Column("terminal", sa.String(32), primary_key=True),
        sa.Column("contiguous_seq", sa.Integer, nullable=False),
        sa.Column("max_seq", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("inbox_progress")
    op.drop_table("server_operations")
    op.drop_table("inbox_received")
