"""cajasync_broker_streams: where the till is in each broker stream it reads

Change events of the shared scopes (the chain's, the location's) come by RabbitMQ streams,
which every till reads from its own offset; AMQP 0-9-1 keeps no offset for a consumer, so
the till keeps the offset of the last event it applied, in the transaction that applied it,
and reads on from the next one after a restart.

Revision ID: t0007
Revises: t0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "t0007"
down_revision = "t0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cajasync_broker_streams",
        sa.Column("stream", sa.String(120), primary_key=True),
        sa.Column("offset", sa.BigInteger),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cajasync_broker_streams")
