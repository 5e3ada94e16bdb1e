"""server_z_closes: every Z close received, checked against the sales held (reconciliation)

Revision ID: s0008
Revises: s0007
Create Date: 2026-12-10

One row per (terminal, Z number): the Z's figures, those of the sales held, its state
(waiting, reconciled, discrepancy), the sale numbers still missing and the replays asked
for them. Z closes received before this revision get no row: they are not reconciled
(checking them now would ask every till for months of sales). An index on
server_operations (terminal, topic, recorded_at) finds a Z's sales without reading the
terminal's whole history.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "s0008"
down_revision = "s0007"
branch_labels = None
depends_on = None


def _amount() -> sa.types.TypeEngine[Any]:
    # as cajasync.core.server_tables.Amount: integer cents on SQLite, NUMERIC(16, 2) elsewhere
    if op.get_bind().dialect.name == "sqlite":
        return sa.BigInteger()
    return sa.Numeric(16, 2)


def upgrade() -> None:
    op.create_table(
        "server_z_closes",
        sa.Column("terminal", sa.String(32), primary_key=True),
        sa.Column("z_number", sa.Integer, primary_key=True),
        sa.Column("op_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_receipt", sa.Integer, nullable=False),
        sa.Column("last_receipt", sa.Integer, nullable=False),
        sa.Column("expected_count", sa.Integer, nullable=False),
        sa.Column("expected_total", _amount(), nullable=False),
        sa.Column("found_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("found_total", _amount(), nullable=False, server_default="0"),
        sa.Column("figures", sa.Text, nullable=False, server_default="{}"),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("missing", sa.Text, nullable=False, server_default="[]"),
        sa.Column("absent", sa.Text, nullable=False, server_default="[]"),
        sa.Column("difference", sa.Text, nullable=False, server_default=""),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replay_asked", sa.Integer, nullable=False, server_default="0"),
        sa.Column("replay_asked_at", sa.DateTime(timezone=True)),
        sa.Column("next_check_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_server_z_closes_state_next", "server_z_closes", ["state", "next_check_at"])
    op.create_index("ix_server_z_closes_period_end", "server_z_closes", ["period_end"])
    op.create_index(
        "ix_server_operations_terminal_topic_recorded",
        "server_operations",
        ["terminal", "topic", "recorded_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_server_operations_terminal_topic_recorded", "server_operations")
    op.drop_table("server_z_closes")
