"""server_terminal_status: the latest status each till reported (`server terminals`)

Revision ID: s0009
Revises: s0008
Create Date: 2026-12-14

A new table, empty until tills report: an existing database keeps its data as it is.
Written after s0008 (another branch); on a branch without s0008 it revises s0007.
"""

import sqlalchemy as sa
from alembic import op

revision = "s0009"
down_revision = "s0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_terminal_status",
        sa.Column("terminal", sa.String(32), primary_key=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.String(32), nullable=False, server_default=""),
        sa.Column("pending", sa.Integer, nullable=False, server_default="0"),
        sa.Column("oldest_pending", sa.DateTime(timezone=True)),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_terminal_status")
