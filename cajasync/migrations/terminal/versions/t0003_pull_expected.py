"""pulls: how many records and images the server said it sent

A pull is complete only when that many have been applied: with two consumers on the
terminal queue (a pull and `terminal run`), the server's "done" can be applied before
the last pages.

Revision ID: t0003
Revises: t0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "t0003"
down_revision = "t0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cajasync_pulls") as batch:
        batch.add_column(sa.Column("expected_records", sa.Integer))
        batch.add_column(sa.Column("expected_images", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("cajasync_pulls") as batch:
        batch.drop_column("expected_images")
        batch.drop_column("expected_records")
