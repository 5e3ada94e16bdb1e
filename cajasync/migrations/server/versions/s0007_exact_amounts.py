"""server_operations.amount: integer cents on SQLite, so every amount reads back exact

Revision ID: s0007
Revises: s0006
Create Date: 2026-12-03

SQLite has no exact decimal type: its NUMERIC(16, 2) column kept amounts as REAL (INTEGER
when whole), so 99999999999999.99 came back as 99999999999999.98 and sums of cents drifted.
On SQLite the column becomes a BIGINT of cents (`Amount` in cajasync/core/server_tables.py): each
stored value is multiplied by 100 and rounded to the nearest cent, half away from zero, so
a REAL that held 0.1 as 0.1000000000000000055 is 10 cents. A cent a REAL already lost (the
.99 stored as .98) cannot come back. PostgreSQL's NUMERIC(16, 2) is exact: nothing changes
there. Downgrading turns the cents back into a NUMERIC(16, 2) column of REALs.
"""

import sqlalchemy as sa
from alembic import op

revision = "s0007"
down_revision = "s0006"
branch_labels = None
depends_on = None

NUMERIC = sa.Numeric(16, 2)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "UPDATE server_operations SET amount = CAST(ROUND(amount * 100) AS INTEGER) "
        "WHERE amount IS NOT NULL"
    )
    with op.batch_alter_table("server_operations", recreate="always") as batch:
        batch.alter_column("amount", type_=sa.BigInteger(), existing_type=NUMERIC)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("server_operations", recreate="always") as batch:
        batch.alter_column("amount", type_=NUMERIC, existing_type=sa.BigInteger())
    op.execute("UPDATE server_operations SET amount = amount / 100.0 WHERE amount IS NOT NULL")
