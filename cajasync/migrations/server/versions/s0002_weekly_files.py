"""server inbox: weekly file chunks and reassembled weekly files

Revision ID: s0002
Revises: s0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "s0002"
down_revision = "s0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_weekly_chunks",
        sa.Column("op_id", sa.String(36), primary_key=True),
        sa.Column("terminal", sa.String(32), nullable=False),
        sa.Column("week", sa.String(8), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_server_weekly_chunks_file",
        "server_weekly_chunks",
        ["terminal", "week", "file_name", "sha256"],
    )
    op.create_table(
        "server_weekly_files",
        sa.Column("terminal", sa.String(32), primary_key=True),
        sa.Column("week", sa.String(8), primary_key=True),
        sa.Column("file_name", sa.String(255), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("chunks_held", sa.Integer, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("content", sa.LargeBinary),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_weekly_files")
    op.drop_table("server_weekly_chunks")
