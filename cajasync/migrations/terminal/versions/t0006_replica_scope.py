"""cajasync_replica.scope/seq/listed_by and the pull's keys, location and outcome

The replica says which stream (scope) each record came by, so a till holds another
location's stock beside its own and tells them apart, and at which seq; a whole snapshot
(`pull --full`) removes what it did not list (`listed_by`). A pull remembers the keys or
the other location it asked for, the streams it got whole, the keys the server lacked and
how many records it removed.

Existing replica rows take the scope their topic has on this till: stock its own location,
payment methods and receipt books its own point of sale, the rest `all`. Their seq stays
unknown (NULL), which a whole snapshot treats as older than its high-water.

Revision ID: t0006
Revises: t0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "t0006"
down_revision = "t0005"
branch_labels = None
depends_on = None

# The down topics that are not published to every terminal, as they were at this revision.
_LOCATION_TOPICS = ("stock",)
_POS_TOPICS = ("formas-de-pago", "talonarios")


def upgrade() -> None:
    with op.batch_alter_table("cajasync_replica") as batch:
        batch.add_column(sa.Column("scope", sa.String(40)))
        batch.add_column(sa.Column("seq", sa.Integer))
        batch.add_column(sa.Column("listed_by", sa.String(36)))
    with op.batch_alter_table("cajasync_pulls") as batch:
        batch.add_column(sa.Column("keys", sa.Text))
        batch.add_column(sa.Column("location", sa.String(32)))
        batch.add_column(sa.Column("whole", sa.Text))
        batch.add_column(sa.Column("missing_keys", sa.Text))
        batch.add_column(sa.Column("removed", sa.Integer))
    connection = op.get_bind()
    terminal = sa.table("cajasync_terminal", sa.column("location"), sa.column("pos"))
    identity = connection.execute(sa.select(terminal.c.location, terminal.c.pos)).first()
    if identity is None:
        return  # no identity: scopes stay unknown (NULL) until changes rewrite the rows
    replica = sa.table("cajasync_replica", sa.column("topic"), sa.column("scope"))
    for topics, scope in (
        (_LOCATION_TOPICS, f"loc.{identity.location}"),
        (_POS_TOPICS, f"pos.{identity.pos}"),
    ):
        op.execute(replica.update().where(replica.c.topic.in_(topics)).values(scope=scope))
    op.execute(replica.update().where(replica.c.scope.is_(None)).values(scope="all"))


def downgrade() -> None:
    with op.batch_alter_table("cajasync_pulls") as batch:
        for name in ("removed", "missing_keys", "whole", "location", "keys"):
            batch.drop_column(name)
    with op.batch_alter_table("cajasync_replica") as batch:
        for name in ("listed_by", "seq", "scope"):
            batch.drop_column(name)
