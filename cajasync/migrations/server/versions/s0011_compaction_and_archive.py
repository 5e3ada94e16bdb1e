"""catalog_streams.compacted_to and server_operations_archive: growth over time

Revision ID: s0011
Revises: s0010
Create Date: 2026-12-10

`compacted_to` is where each stream's change log was compacted to (0: never); a catch-up
from at or below it is answered with a refresh of the stream. `server_operations_archive`
holds operations of past months moved there by `cajasync server archive`; an index on
`server_operations.recorded_at` lets the archive pick a month without a full scan.
"""

import sqlalchemy as sa
from alembic import op

revision = "s0011"
down_revision = "s0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # amounts as server_operations holds them since s0007: cents on SQLite, NUMERIC elsewhere
    sqlite = op.get_bind().dialect.name == "sqlite"
    amount = sa.BigInteger() if sqlite else sa.Numeric(16, 2)
    with op.batch_alter_table("catalog_streams") as batch:
        batch.add_column(sa.Column("compacted_to", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "server_operations_archive",
        sa.Column("op_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("terminal", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("topic", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", amount),
        sa.Column("voided", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_server_operations_archive_recorded", "server_operations_archive", ["recorded_at"]
    )
    op.create_index("ix_server_operations_recorded_at", "server_operations", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_server_operations_recorded_at", table_name="server_operations")
    op.drop_table("server_operations_archive")
    with op.batch_alter_table("catalog_streams") as batch:
        batch.drop_column("compacted_to")
