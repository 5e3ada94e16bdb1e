"""Amounts come back from the server store exact, to the cent, on SQLite and PostgreSQL.

SQLite kept the NUMERIC(16, 2) amount as a REAL: 99999999999999.99 came back as
99999999999999.98 and a back office summing sales lost cents. It now holds integer cents
there (`Amount`, migration s0007); PostgreSQL's NUMERIC was exact already.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from cajasync.core.db import VERSION_TABLES, make_engine, script_location, upgrade
from cajasync.core.server_tables import operations
from cajasync.errors import StoreDataError
from inbox.server_store import Accepted, SqlServerStore
from schemas import CashPayment, OpEnvelope

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
EXTREMES = ["99999999999999.99", "-99999999999999.99", "0.01", "-0.01", "0.00", "1234567.89"]


def payment(seq: int, amount: str, terminal: str = "T1") -> Accepted:
    """An operation whose stored amount is `amount` (the store does not check signs)."""
    op = CashPayment(
        kind="advance",
        payee_kind="supplier",
        payee="SUP1",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )
    envelope = OpEnvelope(
        terminal=terminal, seq=seq, op_id=uuid.uuid4(), version=1, recorded_at=NOW, op=op
    )
    return Accepted(envelope)


def stored(engine: sa.Engine) -> list[Decimal]:
    with engine.connect() as connection:
        query = sa.select(operations.c.amount).order_by(operations.c.seq)
        return list(connection.execute(query).scalars())


def total(engine: sa.Engine) -> Decimal:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.sum(operations.c.amount))).scalar_one()


def test_extreme_amounts_come_back_exact_to_the_cent(engine: sa.Engine) -> None:
    SqlServerStore(engine).apply([payment(n, a) for n, a in enumerate(EXTREMES, start=1)])
    amounts = stored(engine)
    assert amounts == [Decimal(a) for a in EXTREMES]
    assert all(isinstance(a, Decimal) and a.as_tuple().exponent == -2 for a in amounts)


def test_a_sum_of_many_amounts_is_exact_to_the_cent(engine: sa.Engine) -> None:
    """99 x 1000000000000.01 + 999999999999.00 = 99999999999999.99: not a double."""
    amounts = ["1000000000000.01"] * 99 + ["999999999999.00"] + ["0.10"] * 50 + ["-5.00"]
    SqlServerStore(engine).apply([payment(n, a) for n, a in enumerate(amounts, start=1)])
    assert total(engine) == sum(map(Decimal, amounts)) == Decimal("99999999999999.99")


def test_an_amount_is_rounded_to_the_cent_half_away_from_zero(engine: sa.Engine) -> None:
    SqlServerStore(engine).apply([payment(1, "0.005"), payment(2, "-0.005"), payment(3, "2.675")])
    assert stored(engine) == [Decimal("0.01"), Decimal("-0.01"), Decimal("2.68")]


def test_an_amount_past_the_column_is_a_data_error_on_both_stores(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What NUMERIC(16, 2) refuses on PostgreSQL, SQLite refuses too (the store's own check,
    switched off here, keeps it out before the database is asked)."""
    monkeypatch.setattr("inbox.server_store.rules.storage_problem", lambda _envelope: None)
    with pytest.raises(StoreDataError):
        SqlServerStore(engine).apply([payment(1, "99999999999999.995")])
    assert stored(engine) == []


def test_amounts_stored_before_s0007_read_back_as_they_were_meant(tmp_path: Path) -> None:
    """The REALs SQLite held become cents, rounded to the nearest: 0.1 is 10 cents."""
    engine = make_engine(str(tmp_path / "server.db"))
    config = Config()
    config.set_main_option("script_location", script_location("server"))
    config.set_main_option("version_table", VERSION_TABLES["server"])
    old = [0.1, 12.0, -0.3, 1234.56, None, 99999999999999.98]
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "s0005")
        for seq, amount in enumerate(old, start=1):
            connection.execute(
                sa.text(
                    "INSERT INTO server_operations VALUES "
                    "(:op_id, 1, 'T1', :seq, 'pagos', :now, :amount, 0, '{}', :now)"
                ),
                {"op_id": str(uuid.uuid4()), "seq": seq, "now": NOW, "amount": amount},
            )
    upgrade(engine, "server")
    try:
        assert stored(engine) == [
            Decimal("0.10"),
            Decimal("12.00"),
            Decimal("-0.30"),
            Decimal("1234.56"),
            None,
            Decimal("99999999999999.98"),  # the cent a REAL lost before s0007 stays lost
        ]
        with engine.connect() as connection:
            raw = connection.exec_driver_sql("SELECT typeof(amount) FROM server_operations")
            assert set(raw.scalars()) == {"integer", "null"}
    finally:
        engine.dispose()
