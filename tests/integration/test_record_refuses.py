"""`record()` refuses, before writing anything, what the server would reject: the POS learns
at the till. The rules are the server's own (schemas/validation.py, schemas/limits.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync import record, record_weekly_file
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.terminal_tables import outbox, terminal
from cajasync.errors import InvalidMessage
from schemas import CashPayment, Sale, SaleLine, SalePayment, SaleTotals, decode_op
from schemas.limits import MAX_OPERATION_BYTES

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)

pos_metadata = sa.MetaData()
pos_payment = sa.Table(
    "pos_payment",
    pos_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("note", sa.Text),
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(str(tmp_path / "caja.db"))
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity("CAJA-07", "SUC-1", "POS-3", "retail"))
        pos_metadata.create_all(connection)
    yield engine
    engine.dispose()


def _payment(amount: str) -> CashPayment:
    return CashPayment(
        kind="advance",
        payee_kind="employee",
        payee="E07",
        amount=Decimal(amount),
        method="efectivo",
        date=NOW,
    )


def _sale(quantity: str, *, kind: str = "sale") -> Sale:
    lines = [
        SaleLine(
            product="YERBA",
            quantity=Decimal(quantity),
            unit_price=Decimal("3150.00"),
            tax_rate=Decimal(21),
        )
    ]
    totals = SaleTotals.of(lines)
    return Sale(
        book="B-0001",
        number=7,
        date=NOW,
        seller="V01",
        lines=lines,
        payments=[SalePayment(method="efectivo", amount=totals.total)],
        totals=totals,
        kind="return" if kind == "return" else "sale",
    )


def _outbox(engine: Engine) -> list[tuple[int, bytes]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.select(outbox.c.seq, outbox.c.body))]  # type: ignore[misc]


def _last_seq(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(terminal.c.last_seq)).scalar_one())


def test_an_amount_the_store_cannot_hold_is_refused_before_anything_is_written(
    engine: Engine,
) -> None:
    """The POS can go on with its transaction: no seq was taken, no row was written."""
    with engine.begin() as connection:
        connection.execute(pos_payment.insert(), {"note": "adelanto"})
        with pytest.raises(InvalidMessage) as caught:
            record(connection, _payment("99999999999999.999"))
        assert caught.value.reason == (
            "cash payment amount 99999999999999.999 has more than 2 decimal places"
        )
        assert _last_seq_in(connection) == 0
        recorded = record(connection, _payment("15000.00"))
    assert recorded.seq == 1
    assert [seq for seq, _body in _outbox(engine)] == [1]


def _last_seq_in(connection: sa.Connection) -> int:
    return int(connection.execute(sa.select(terminal.c.last_seq)).scalar_one())


def test_a_sale_with_a_negative_total_is_refused_and_a_return_is_recorded(engine: Engine) -> None:
    with engine.begin() as connection, pytest.raises(InvalidMessage) as caught:
        record(connection, _sale("-2"))
    assert caught.value.reason == (
        "sale B-0001-7 lines[0] quantity -2 is negative: record a return (kind='return')"
    )
    with engine.begin() as connection:
        record(connection, _sale("-2", kind="return"))
    [(seq, body)] = _outbox(engine)
    returned = decode_op(body).op
    assert isinstance(returned, Sale)
    assert (seq, returned.kind, returned.totals.total) == (1, "return", Decimal("-7623.00"))


def test_an_operation_over_the_size_limit_is_refused_with_its_size(engine: Engine) -> None:
    content = b"\x00" * (MAX_OPERATION_BYTES + 1)
    with engine.begin() as connection, pytest.raises(InvalidMessage, match="bytes encoded, over"):
        record_weekly_file(
            connection,
            week="2026-W09",
            file_name="semanal.bin",
            content=content,
            chunk_size=len(content),
        )
    assert _outbox(engine) == []
    assert _last_seq(engine) == 0


def test_a_weekly_file_larger_than_the_limit_travels_in_default_chunks(engine: Engine) -> None:
    content = bytes(range(256)) * (3 * MAX_OPERATION_BYTES // 256)
    with engine.begin() as connection:
        recorded = record_weekly_file(
            connection, week="2026-W09", file_name="semanal.bin", content=content
        )
    chunks = [decode_op(body).op for _seq, body in _outbox(engine)]
    assert len(recorded) == len(chunks) > 3
    assert b"".join(chunk.data for chunk in chunks) == content  # type: ignore[union-attr]
