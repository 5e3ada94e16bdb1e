"""inbox_incarnations: each terminal's databases, to tell a rebuilt till from a second copy

Revision ID: s0005
Revises: s0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "s0005"
down_revision = "s0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_incarnations",
        sa.Column("terminal", sa.String(32), primary_key=True),
        sa.Column("incarnation", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("start_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("end_seq", sa.Integer),
        sa.Column("successor", sa.String(36)),
        sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),
        sa.Column("registered_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("inbox_incarnations")
