"""terminal replica: records, stream positions, images, pulls

Revision ID: t0002
Revises: t0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "t0002"
down_revision = "t0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cajasync_replica",
        sa.Column("topic", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("body", sa.LargeBinary),
        sa.Column("image", sa.String(64)),
        sa.Column("applied_at", sa.Float, nullable=False),
    )
    op.create_table(
        "cajasync_streams",
        sa.Column("stream", sa.String(80), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "cajasync_images",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("stored_at", sa.Float, nullable=False),
    )
    op.create_table(
        "cajasync_pulls",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("topics", sa.Text, nullable=False),
        sa.Column("full", sa.Boolean, nullable=False),
        sa.Column("images", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("image_count", sa.Integer, nullable=False),
        sa.Column("image_bytes", sa.Integer, nullable=False),
        sa.Column("high_water", sa.Text),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("cajasync_pulls")
    op.drop_table("cajasync_images")
    op.drop_table("cajasync_streams")
    op.drop_table("cajasync_replica")
