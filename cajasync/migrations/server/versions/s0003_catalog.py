"""server catalog: current records, stream heads, change log, images

Revision ID: s0003
Revises: s0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "s0003"
down_revision = "s0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_records",
        sa.Column("topic", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("body", sa.LargeBinary),
        sa.Column("image", sa.String(64)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_catalog_records_stream_seq", "catalog_records", ["topic", "scope", "seq"])
    op.create_table(
        "catalog_streams",
        sa.Column("stream", sa.String(80), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "catalog_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(80), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("topic", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(40), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("published_at", sa.Float),
        sa.UniqueConstraint("stream", "seq", name="uq_catalog_changes_stream_seq"),
    )
    op.create_index("ix_catalog_changes_unpublished", "catalog_changes", ["published_at", "id"])
    op.create_table(
        "catalog_images",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("catalog_images")
    op.drop_table("catalog_changes")
    op.drop_table("catalog_streams")
    op.drop_table("catalog_records")
