"""A stand-in POS: records a realistic stream of operations through the public write API.

It keeps its own `pos_sales` table, as a real POS would, and writes each sale there and to
the outbox in one transaction. Used by `cajasync terminal simulate`, the demo, load tests
and benchmarks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox.record import Recorded, record, record_weekly_file
from schemas.codec import encode
from schemas.ops import (
    CardData,
    CashPayment,
    MethodTotal,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    TaxTotal,
    ZClose,
    cents,
)
from schemas.topics import CASH_PAYMENTS, SALES, WEEKLY_FILES, Z_CLOSES

pos_metadata = sa.MetaData()

# The POS's own table (not cajasync's): what a real POS would keep for its tickets.
pos_sales = sa.Table(
    "pos_sales",
    pos_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("op_id", sa.String(36), nullable=False),
    sa.Column("book", sa.String(32), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("total", sa.Numeric(16, 2), nullable=False),
    sa.Column("voided", sa.Boolean, nullable=False),
    sa.Column("z_number", sa.Integer),
    sa.Column("ticket", sa.LargeBinary, nullable=False),
)

PRODUCTS = [
    ("7790001000011", "Yerba mate 1kg", "4500.00", "21"),
    ("7790001000028", "Cafe molido 500g", "3900.00", "21"),
    ("7790001000035", "Leche entera 1l", "1250.00", "10.5"),
    ("7790001000042", "Pan frances kg", "2100.00", "10.5"),
    ("7790001000059", "Aceite girasol 900ml", "2890.00", "21"),
    ("7790001000066", "Azucar 1kg", "1150.00", "21"),
    ("7790001000073", "Fideos 500g", "980.00", "21"),
    ("7790001000080", "Manzanas kg", "1890.00", "10.5"),
    ("7790001000097", "Agua mineral 2l", "890.00", "21"),
    ("7790001000103", "Libro escolar", "15400.00", "0"),
]
SELLERS = ["V001", "V002", "V003"]
CUSTOMERS = [None, None, None, "C00017", "C00042", "C00101"]
BANKS = [("Banco Nacion", "VISA"), ("Banco Galicia", "MASTERCARD"), ("Banco Macro", "AMEX")]
PAYEES = [("supplier", "PRV-0007"), ("supplier", "PRV-0012"), ("employee", "EMP-0003")]


class SimulationResult(msgspec.Struct):
    recorded: dict[str, int]
    voided: int


class TicketMaker:
    """Builds realistic operations (no I/O); deterministic for a given seed."""

    def __init__(self, *, seed: int | None = None, book: str = "B-0001") -> None:
        self.random = random.Random(seed)
        self.book = book

    def sales(self, count: int) -> list[Sale]:
        """`count` sales numbered from 1, for load tests and benchmarks."""
        return [self.make_sale(number) for number in range(1, count + 1)]

    def make_sale(self, number: int) -> Sale:
        lines = [self.make_line() for _ in range(self.random.randint(1, 6))]
        totals = SaleTotals.of(lines)
        return Sale(
            book=self.book,
            number=number,
            date=dt.datetime.now(dt.UTC),
            seller=self.random.choice(SELLERS),
            customer=self.random.choice(CUSTOMERS),
            lines=lines,
            payments=self.make_payments(totals.total),
            totals=totals,
        )

    def make_line(self) -> SaleLine:
        code, name, price, rate = self.random.choice(PRODUCTS)
        quantity = Decimal(self.random.choice(["1", "1", "2", "3", "0.5", "1.25"]))
        discount = (
            cents(Decimal(price) * quantity / 10) if self.random.random() < 0.1 else Decimal(0)
        )
        return SaleLine(
            product=code,
            description=name,
            quantity=quantity,
            unit_price=Decimal(price),
            discount=discount,
            tax_rate=Decimal(rate),
        )

    def make_payments(self, total: Decimal) -> list[SalePayment]:
        roll = self.random.random()
        if roll < 0.5:
            return [SalePayment(method="EFECTIVO", amount=total)]
        bank, brand = self.random.choice(BANKS)
        card = CardData(
            bank=bank,
            brand=brand,
            last4=f"{self.random.randint(0, 9999):04d}",
            installments=self.random.choice([1, 1, 3, 6]),
            authorization=f"{self.random.randint(0, 999999):06d}",
        )
        if roll < 0.85 or total < 2:
            return [SalePayment(method="TARJETA", amount=total, card=card)]
        cash = cents(total / 2)
        return [
            SalePayment(method="EFECTIVO", amount=cash),
            SalePayment(method="TARJETA", amount=total - cash, card=card),
        ]

    def make_z(self, z_number: int, sales: list[Sale]) -> ZClose:
        by_tax: dict[Decimal, list[Decimal]] = {}
        by_method: Counter[str] = Counter()
        live = [s for s in sales if not s.voided]
        for sale in live:
            for line in sale.lines:
                net_tax = by_tax.setdefault(line.tax_rate, [Decimal(0), Decimal(0)])
                net_tax[0] += line.net
                net_tax[1] += line.tax
            for payment in sale.payments:
                by_method[payment.method] += payment.amount  # type: ignore[assignment]
        now = dt.datetime.now(dt.UTC)
        return ZClose(
            number=z_number,
            period_start=sales[0].date if sales else now,
            period_end=now,
            first_receipt=sales[0].number if sales else 0,
            last_receipt=sales[-1].number if sales else 0,
            sale_count=len(live),
            totals_by_tax=[
                TaxTotal(rate=rate, net=net, tax=tax) for rate, (net, tax) in sorted(by_tax.items())
            ],
            totals_by_method=[
                MethodTotal(method=m, amount=Decimal(a)) for m, a in sorted(by_method.items())
            ],
            total=sum((s.totals.total for s in live), Decimal(0)),
        )


class PosSimulator:
    """One till's worth of realistic operations, recorded as a POS would."""

    def __init__(self, engine: Engine, *, seed: int | None = None, book: str = "B-0001") -> None:
        self.engine = engine
        self.maker = TicketMaker(seed=seed, book=book)
        self.random = self.maker.random
        self.book = book
        pos_metadata.create_all(engine)

    def sale(self) -> Recorded:
        """Ring up one sale: insert it in the POS table and the outbox, one transaction."""
        with self.engine.begin() as connection:
            number = self._next_number(connection)
            sale = self.maker.make_sale(number)
            recorded = record(connection, sale)
            connection.execute(
                pos_sales.insert().values(
                    op_id=str(recorded.op_id),
                    book=self.book,
                    number=number,
                    total=sale.totals.total,
                    voided=False,
                    ticket=encode(sale),
                )
            )
        return recorded

    def void(self, op_id: uuid.UUID) -> Recorded:
        """Void an earlier sale: a new version of the same operation, queued again."""
        with self.engine.begin() as connection:
            ticket = connection.execute(
                sa.select(pos_sales.c.ticket).where(pos_sales.c.op_id == str(op_id))
            ).scalar_one()
            sale = msgspec.structs.replace(msgspec.msgpack.decode(ticket, type=Sale), voided=True)
            connection.execute(
                pos_sales.update()
                .where(pos_sales.c.op_id == str(op_id))
                .values(voided=True, ticket=encode(sale))
            )
            return record(connection, sale, op_id=op_id)

    def cash_payment(self) -> Recorded:
        """A transfer or an advance paid out of the till."""
        payee_kind, payee = self.random.choice(PAYEES)
        payment = CashPayment(
            kind=self.random.choice(["transfer", "advance"]),
            payee_kind=payee_kind,  # type: ignore[arg-type]
            payee=payee,
            amount=cents(Decimal(self.random.randint(1000, 50000))),
            method="EFECTIVO",
            date=dt.datetime.now(dt.UTC),
            note="adelanto de caja" if payee_kind == "employee" else "pago a proveedor",
        )
        with self.engine.begin() as connection:
            return record(connection, payment)

    def z_close(self) -> Recorded:
        """Close the fiscal day: totals of every sale since the last Z."""
        with self.engine.begin() as connection:
            rows = connection.execute(
                sa.select(pos_sales.c.id, pos_sales.c.number, pos_sales.c.ticket)
                .where(pos_sales.c.z_number.is_(None))
                .order_by(pos_sales.c.number)
            ).all()
            last_z = connection.execute(sa.select(sa.func.max(pos_sales.c.z_number))).scalar()
            z_number = (last_z or 0) + 1
            close = self.maker.make_z(
                z_number, [msgspec.msgpack.decode(r.ticket, type=Sale) for r in rows]
            )
            connection.execute(
                pos_sales.update()
                .where(pos_sales.c.id.in_([r.id for r in rows]))
                .values(z_number=z_number)
            )
            return record(connection, close)

    def weekly_file(self, size: int = 300_000) -> list[Recorded]:
        """The weekly fiscal file, split in chunks."""
        today = dt.date.today()
        year, week, _ = today.isocalendar()
        lines: list[bytes] = []
        while sum(len(line) for line in lines) < size:
            lines.append(
                f"{len(lines):08d}|{self.book}|{self.random.randint(0, 10**9):010d}\n".encode()
            )
        content = b"".join(lines)[:size]
        with self.engine.begin() as connection:
            return record_weekly_file(
                connection,
                week=f"{year}-W{week:02d}",
                file_name=f"fiscal-{year}-W{week:02d}-{hashlib.sha1(content).hexdigest()[:8]}.txt",  # noqa: S324
                content=content,
            )

    def _next_number(self, connection: sa.Connection) -> int:
        last = connection.execute(
            sa.select(sa.func.max(pos_sales.c.number)).where(pos_sales.c.book == self.book)
        ).scalar()
        return (last or 0) + 1


def simulate(
    engine: Engine,
    *,
    sales: int,
    payments: int = 0,
    z_close: bool = False,
    weekly_file: bool = False,
    void_ratio: float = 0.02,
    seed: int | None = None,
    on_step: Callable[[str], None] | None = None,
) -> SimulationResult:
    """Record `sales` sales (a few voided later), `payments` cash payments, then a Z close."""
    pos = PosSimulator(engine, seed=seed)
    counts: Counter[str] = Counter()
    voided = 0
    sold: list[uuid.UUID] = []
    payment_every = max(1, sales // payments) if payments else 0
    for index in range(sales):
        sold.append(pos.sale().op_id)
        counts[SALES] += 1
        if on_step:
            on_step(SALES)
        if payment_every and index % payment_every == 0 and counts[CASH_PAYMENTS] < payments:
            pos.cash_payment()
            counts[CASH_PAYMENTS] += 1
            if on_step:
                on_step(CASH_PAYMENTS)
        if len(sold) > 5 and pos.random.random() < void_ratio:
            pos.void(sold.pop(pos.random.randrange(len(sold) - 1)))
            counts[SALES] += 1  # the new version is one more outbox row of the same topic
            voided += 1
    while counts[CASH_PAYMENTS] < payments:
        pos.cash_payment()
        counts[CASH_PAYMENTS] += 1
    if z_close:
        pos.z_close()
        counts[Z_CLOSES] += 1
    if weekly_file:
        counts[WEEKLY_FILES] += len(pos.weekly_file())
    return SimulationResult(recorded=dict(counts), voided=voided)
