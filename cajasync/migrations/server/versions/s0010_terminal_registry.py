"""server_store and server_terminals: this store's id, and the registry of its terminals

Revision ID: s0010
Revises: s0007 (s0009 once merged)
Create Date: 2026-12-05

Every store gets a random id here (an existing store with data too), which a server process
announces on its broker vhost: a process of another store refuses that vhost. The registry
starts empty: terminals already sending are registered with `cajasync server terminal add`.
"""

import datetime as dt
import uuid

import sqlalchemy as sa
from alembic import op

revision = "s0010"
down_revision = "s0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    store = op.create_table(
        "server_store",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("store_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(
        store, [{"id": 1, "store_id": str(uuid.uuid4()), "created_at": dt.datetime.now(dt.UTC)}]
    )
    op.create_table(
        "server_terminals",
        sa.Column("terminal", sa.String(32), primary_key=True),
        sa.Column("location", sa.String(32), nullable=False),
        sa.Column("pos", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("broker_user", sa.String(64)),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("rotated_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("server_terminals")
    op.drop_table("server_store")
