"""cajasync_purges and cajasync_purged: the clean-up log

`cajasync tools purge-synced` deletes acknowledged operations; each purge is logged (who,
when, how many per topic and period) and every removed outbox row keeps a slim row (no
body), so compare and diff still count it as the till's and say it was purged.

Revision ID: t0005
Revises: t0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "t0005"
down_revision = "t0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cajasync_purges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("before", sa.DateTime(timezone=True)),
        sa.Column("counts", sa.Text, nullable=False),
    )
    op.create_table(
        "cajasync_purged",
        sa.Column("op_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("topic", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purge_id", sa.Integer, sa.ForeignKey("cajasync_purges.id"), nullable=False),
    )
    op.create_index(
        "ix_cajasync_purged_topic_recorded", "cajasync_purged", ["topic", "recorded_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_cajasync_purged_topic_recorded", "cajasync_purged")
    op.drop_table("cajasync_purged")
    op.drop_table("cajasync_purges")
