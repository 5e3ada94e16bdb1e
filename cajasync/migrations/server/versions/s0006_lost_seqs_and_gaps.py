"""inbox_lost: seqs a rebuilt till will never send; inbox_gaps: open gaps and their requests

Revision ID: s0006
Revises: s0005
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "s0006"
down_revision = "s0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_lost",
        sa.Column("terminal", sa.String(32), primary_key=True),
        sa.Column("from_seq", sa.Integer, primary_key=True),
        sa.Column("to_seq", sa.Integer, nullable=False),
        sa.Column("restart_seq", sa.Integer, nullable=False),
        sa.Column("incarnation", sa.String(36), nullable=False),
        sa.Column("lost_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "inbox_gaps",
        sa.Column("terminal", sa.String(32), primary_key=True),
        sa.Column("from_seq", sa.Integer, nullable=False),
        sa.Column("to_seq", sa.Integer, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("asked", sa.Integer, nullable=False),
        sa.Column("asked_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("inbox_gaps")
    op.drop_table("inbox_lost")
