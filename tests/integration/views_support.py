"""A till with a day of business for the views' tests, recorded through the public API.

Twelve sales (numbers 1..12; 1..8 on 2026-03-02, 9..12 on 2026-03-03; odd numbers to
customer C1, even to C2; sale 3 later voided: version 2), two cash payments, one Z close
and one weekly file of three chunks.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync import record, record_weekly_file
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.terminal_tables import outbox, purged, purges
from schemas import CashPayment, MethodTotal, Sale, SaleLine, SalePayment, SaleTotals, ZClose

DAY_1 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
DAY_2 = dt.datetime(2026, 3, 3, 9, 0, tzinfo=dt.UTC)
FILE_NAME = "fiscal-2026-W10.txt"
FILE_SIZE = 600_000  # three chunks of 256 KiB at most
SALES = 12


@dataclass
class Till:
    engine: Engine
    sales: dict[int, uuid.UUID] = field(default_factory=dict)  # number -> op_id
    payments: list[uuid.UUID] = field(default_factory=list)
    z_close: uuid.UUID | None = None
    chunks: list[uuid.UUID] = field(default_factory=list)


def sale(number: int, *, voided: bool = False, customer: str | None = None) -> Sale:
    line = SaleLine(
        product="P1", quantity=Decimal(number), unit_price=Decimal(10), tax_rate=Decimal(21)
    )
    totals = SaleTotals.of([line])
    return Sale(
        book="A",
        number=number,
        date=recorded_at(number),
        seller="S1",
        lines=[line],
        payments=[SalePayment(method="cash", amount=totals.total)],
        totals=totals,
        customer=customer or ("C1" if number % 2 else "C2"),
        voided=voided,
    )


def recorded_at(number: int) -> dt.datetime:
    return (DAY_1 if number <= 8 else DAY_2) + dt.timedelta(minutes=number)


def open_till(path: Path, terminal: str) -> Engine:
    engine = make_engine(str(path))
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity(terminal, "L1", "PV1", "retail"))
    return engine


def stock_till(engine: Engine) -> Till:
    """Record the day described above; returns the op ids."""
    till = Till(engine)
    with engine.begin() as connection:
        for number in range(1, SALES + 1):
            rec = record(connection, sale(number), now=recorded_at(number))
            till.sales[number] = rec.op_id
        voided_at = recorded_at(3) + dt.timedelta(seconds=30)
        record(connection, sale(3, voided=True), op_id=till.sales[3], now=voided_at)
        for index, payee in enumerate(("SUP-1", "EMP-7")):
            payment = CashPayment(
                kind="advance",
                payee_kind="supplier" if index == 0 else "employee",
                payee=payee,
                amount=Decimal("25.50"),
                method="cash",
                date=DAY_1,
            )
            till.payments.append(record(connection, payment, now=DAY_1).op_id)
        close = ZClose(
            number=41,
            period_start=DAY_1,
            period_end=DAY_1 + dt.timedelta(hours=12),
            first_receipt=1,
            last_receipt=8,
            sale_count=8,
            totals_by_tax=[],
            totals_by_method=[MethodTotal(method="cash", amount=Decimal("100.00"))],
            total=Decimal("100.00"),
        )
        till.z_close = record(connection, close, now=DAY_1 + dt.timedelta(hours=12)).op_id
        content = bytes(range(256)) * (FILE_SIZE // 256) + b"x" * (FILE_SIZE % 256)
        chunks = record_weekly_file(
            connection, week="2026-W10", file_name=FILE_NAME, content=content
        )
        till.chunks = [chunk.op_id for chunk in chunks]
    return till


def set_state(
    engine: Engine, op_ids: list[uuid.UUID], state: str, last_error: str | None = None
) -> None:
    with engine.begin() as connection:
        connection.execute(
            outbox.update()
            .where(outbox.c.op_id.in_([str(op_id) for op_id in op_ids]))
            .values(state=state, last_error=last_error)
        )


def purge(engine: Engine, op_ids: list[uuid.UUID]) -> None:
    """What `tools purge-synced` leaves: the rows gone from the outbox, a slim row each in
    the purge log."""
    keys = [str(op_id) for op_id in op_ids]
    with engine.begin() as connection:
        purge_id = connection.execute(
            purges.insert().values(
                user="ana", role="ADMIN", purged_at=DAY_2, before=None, counts="{}"
            )
        ).inserted_primary_key[0]
        rows = connection.execute(
            sa.select(outbox.c.op_id, outbox.c.version, outbox.c.seq, outbox.c.topic)
            .add_columns(outbox.c.recorded_at)
            .where(outbox.c.op_id.in_(keys))
        ).all()
        connection.execute(
            purged.insert(), [{**row._asdict(), "purge_id": purge_id} for row in rows]
        )
        connection.execute(outbox.delete().where(outbox.c.op_id.in_(keys)))
