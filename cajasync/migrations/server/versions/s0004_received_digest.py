"""server inbox: content digest of every tracking row; seqs taken by rejections given back

Revision ID: s0004
Revises: s0003
Create Date: 2026-12-01

Until s0004 a rejected message with a terminal and seq (even from a bare `seq` header, or an
envelope under another terminal's routing key) was recorded as `bad:<terminal>:<seq>`, and the
terminal's real operation with that seq was rejected for good. Those rows are deleted and
each terminal's progress is moved back below the first seq freed, so the server asks the
terminal to replay them: its real operations are applied, an invalid one of its own is recorded
again as rejected under its own (op_id, version). Downgrading drops the digests only.
"""

import sqlalchemy as sa
from alembic import op

revision = "s0004"
down_revision = "s0003"
branch_labels = None
depends_on = None

received = sa.table(
    "inbox_received",
    sa.column("op_id", sa.String),
    sa.column("terminal", sa.String),
    sa.column("seq", sa.Integer),
)
progress = sa.table(
    "inbox_progress",
    sa.column("terminal", sa.String),
    sa.column("contiguous_seq", sa.Integer),
    sa.column("max_seq", sa.Integer),
)


def upgrade() -> None:
    op.add_column("inbox_received", sa.Column("digest", sa.String(64)))
    _free_seqs_held_by_rejections()


def downgrade() -> None:
    with op.batch_alter_table("inbox_received") as batch:
        batch.drop_column("digest")


def _free_seqs_held_by_rejections() -> None:
    connection = op.get_bind()
    bad = received.c.op_id.like("bad:%")
    first_freed = connection.execute(
        sa.select(received.c.terminal, sa.func.min(received.c.seq))
        .where(bad)
        .group_by(received.c.terminal)
    ).all()
    connection.execute(received.delete().where(bad))
    for terminal, seq in first_freed:
        highest = connection.execute(
            sa.select(sa.func.coalesce(sa.func.max(received.c.seq), 0)).where(
                received.c.terminal == terminal
            )
        ).scalar_one()
        connection.execute(
            progress.update()
            .where(progress.c.terminal == terminal)
            .values(
                contiguous_seq=sa.case(
                    (progress.c.contiguous_seq < seq, progress.c.contiguous_seq),
                    else_=seq - 1,
                ),
                max_seq=highest,
            )
        )
