"""terminal identity and outbox

Revision ID: t0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cajasync_terminal",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("terminal", sa.String(32), nullable=False),
        sa.Column("location", sa.String(32), nullable=False),
        sa.Column("pos", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "cajasync_outbox",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("op_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("topic", sa.String(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("sent_at", sa.Float),
        sa.Column("settled_at", sa.Float),
        sa.UniqueConstraint("op_id", "version", name="uq_cajasync_outbox_op_version"),
    )
    op.create_index("ix_cajasync_outbox_state_seq", "cajasync_outbox", ["state", "seq"])


def downgrade() -> None:
    op.drop_table("cajasync_outbox")
    op.drop_table("cajasync_terminal")
