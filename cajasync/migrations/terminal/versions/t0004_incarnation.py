"""cajasync_terminal.incarnation: a random id of this terminal database

Stamped on every operation, so the server tells a rebuilt till from a second live copy of
the same terminal id (inbox/server_store/incarnations.py). A database that existed before
gets one now.

Revision ID: t0004
Revises: t0003
Create Date: 2026-12-02
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "t0004"
down_revision = "t0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cajasync_terminal") as batch:
        batch.add_column(sa.Column("incarnation", sa.String(36)))
    terminal = sa.table("cajasync_terminal", sa.column("id"), sa.column("incarnation"))
    op.execute(terminal.update().values(incarnation=str(uuid.uuid4())))


def downgrade() -> None:
    with op.batch_alter_table("cajasync_terminal") as batch:
        batch.drop_column("incarnation")
