"""Server ingest refuses what does not fit, with its reason, and keeps going (both stores).

The rules are the ones `record()` applies at the till (schemas/validation.py and
schemas/limits.py); here a till that does not use them (an old one, or a forger) sends.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pika
import pytest
import sqlalchemy as sa

from cajasync.broker.ports import REASON_HEADER
from cajasync.core import topology
from cajasync.core.server_tables import operations
from cajasync.core.settings import Settings
from inbox.ingest import run_ingest
from schemas import (
    CashPayment,
    OpEnvelope,
    Operation,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    WeeklyFileChunk,
    encode,
    topic_of,
)
from schemas.limits import MAX_OP_BYTES
from schemas.validation import file_sha256

pytestmark = pytest.mark.rabbitmq

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
IDLE_S = 0.5


def sale(number: int, quantity: str = "2", *, kind: str = "sale") -> Sale:
    lines = [
        SaleLine(
            product="P1", quantity=Decimal(quantity), unit_price=Decimal(5), tax_rate=Decimal(21)
        )
    ]
    totals = SaleTotals.of(lines)
    return Sale(
        book="A",
        number=number,
        date=NOW,
        seller="S1",
        lines=lines,
        payments=[SalePayment(method="cash", amount=totals.total)],
        totals=totals,
        kind="return" if kind == "return" else "sale",
    )


def cash(amount: str) -> CashPayment:
    return CashPayment(
        kind="transfer",
        payee_kind="supplier",
        payee="S9",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )


def publish(channel: Any, terminal: str, seq: int, op: Operation) -> OpEnvelope:
    """Publish as a relay does (no validation at the till): persistent msgpack, ids, headers."""
    envelope = OpEnvelope(
        terminal=terminal, seq=seq, op_id=uuid.uuid4(), version=1, recorded_at=NOW, op=op
    )
    topic = topic_of(op)
    channel.basic_publish(
        topology.UP_EXCHANGE,
        topology.op_routing_key(terminal, topic),
        encode(envelope),
        pika.BasicProperties(
            delivery_mode=2,
            content_type="application/msgpack",
            message_id=f"{envelope.op_id}/1",
            user_id="guest",
            headers={"terminal": terminal, "seq": seq, "topic": topic},
        ),
    )
    return envelope


def reasons(channel: Any, terminal: str) -> list[str]:
    """The reasons of `terminal`'s messages on `cajasync.dead`."""
    found: list[str] = []
    while True:
        method, properties, _body = channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
        if method is None:
            return found
        headers = properties.headers or {}
        if headers.get("terminal") == terminal:
            found.append(str(headers[REASON_HEADER]))


def held(engine: sa.Engine, terminal: str) -> dict[str, Decimal | None]:
    """op_id -> stored amount of every operation the server holds for `terminal`."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(operations.c.op_id, operations.c.amount).where(
                operations.c.terminal == terminal
            )
        )
        return {op_id: None if amount is None else Decimal(amount) for op_id, amount in rows}


def test_an_amount_past_cents_is_dead_lettered_and_the_server_keeps_applying(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    """NUMERIC(16, 2) would round 99999999999999.999 up to 10^14: PostgreSQL refused it
    and server ingest stopped. It is now rejected with its reason, like at the till."""
    first = publish(channel, terminal, 1, cash("10.00"))
    publish(channel, terminal, 2, cash("99999999999999.999"))
    last = publish(channel, terminal, 3, cash("250.00"))

    run_ingest(engine, settings, until_idle=IDLE_S)

    assert held(engine, terminal) == {
        str(first.op_id): Decimal("10.00"),
        str(last.op_id): Decimal("250.00"),
    }
    [reason] = reasons(channel, terminal)
    assert reason.endswith("cash payment amount 99999999999999.999 has more than 2 decimal places")


def test_a_sale_with_a_negative_total_is_rejected_and_a_return_is_applied(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    publish(channel, terminal, 1, sale(1, "-2"))
    returned = publish(channel, terminal, 2, sale(2, "-2", kind="return"))

    run_ingest(engine, settings, until_idle=IDLE_S)

    assert held(engine, terminal) == {str(returned.op_id): Decimal("-12.10")}
    [reason] = reasons(channel, terminal)
    assert reason.endswith(
        "sale A-1 lines[0] quantity -2 is negative: record a return (kind='return')"
    )


def test_an_operation_over_the_size_limit_is_dead_lettered_with_its_size(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    data = b"\x00" * MAX_OP_BYTES
    chunk = WeeklyFileChunk(
        week="2026-W09",
        file_name="semanal.bin",
        size=len(data),
        sha256=file_sha256(data),
        chunk_index=0,
        chunk_count=1,
        data=data,
    )
    publish(channel, terminal, 1, chunk)
    after = publish(channel, terminal, 2, sale(2))

    run_ingest(engine, settings, until_idle=IDLE_S)

    assert list(held(engine, terminal)) == [str(after.op_id)]
    [reason] = reasons(channel, terminal)
    assert reason.startswith("operation of 1,048,")
    assert reason.endswith(f"bytes is over the limit of {MAX_OP_BYTES:,} bytes")
