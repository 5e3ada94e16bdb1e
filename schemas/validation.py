"""Business checks the types cannot express; a failure rejects the operation with a reason."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from decimal import Decimal, DecimalException

import msgspec

from cajasync.errors import InvalidMessage
from schemas.envelope import OpEnvelope
from schemas.ops import CashPayment, Operation, Sale, SaleTotals, WeeklyFileChunk, ZClose


def validate(envelope: OpEnvelope) -> None:
    """Raise InvalidMessage naming the first broken rule of the operation."""
    where = f"terminal {envelope.terminal} seq {envelope.seq} op {envelope.op_id}"
    for path, amount in _decimals(envelope.op, ""):
        if not amount.is_finite():
            raise InvalidMessage(f"{where}: {path.lstrip('.')} is {amount}, not a finite number")
    try:
        _check_operation(envelope.op, where)
    except DecimalException as exc:  # finite, but beyond what the decimal context computes
        raise InvalidMessage(f"{where}: an amount is too large to compute with") from exc


def _check_operation(op: Operation, where: str) -> None:
    match op:
        case Sale() as sale:
            _check_sale(sale, where)
        case CashPayment() as payment:
            if payment.amount <= 0:
                raise InvalidMessage(f"{where}: cash payment amount must be positive")
        case ZClose() as close:
            if close.first_receipt > close.last_receipt:
                raise InvalidMessage(f"{where}: Z close first receipt after last receipt")
            if (close.period_start.tzinfo is None) != (close.period_end.tzinfo is None):
                raise InvalidMessage(f"{where}: Z close period mixes times with and without zone")
            if close.period_start > close.period_end:
                raise InvalidMessage(f"{where}: Z close period ends before it starts")
        case WeeklyFileChunk() as chunk:
            if chunk.chunk_index >= chunk.chunk_count:
                raise InvalidMessage(
                    f"{where}: chunk {chunk.chunk_index} of a {chunk.chunk_count}-chunk file"
                )


def _decimals(value: object, path: str) -> Iterator[tuple[str, Decimal]]:
    """Every Decimal inside a Struct, with its path (`lines[0].unit_price`)."""
    if isinstance(value, Decimal):
        yield path, value
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            yield from _decimals(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _decimals(item, f"{path}[{index}]")


def _check_sale(sale: Sale, where: str) -> None:
    if not sale.lines:
        raise InvalidMessage(f"{where}: sale {sale.book}-{sale.number} has no lines")
    for line in sale.lines:
        if not 0 <= line.tax_rate <= 100:
            raise InvalidMessage(
                f"{where}: sale {sale.book}-{sale.number} tax rate {line.tax_rate} "
                f"of {line.product} not in 0..100"
            )
    expected = SaleTotals.of(sale.lines)
    if sale.totals != expected:
        raise InvalidMessage(
            f"{where}: sale {sale.book}-{sale.number} totals {sale.totals.total} "
            f"do not match its lines ({expected.total})"
        )
    paid = sum((p.amount for p in sale.payments), start=expected.total * 0)
    if not sale.voided and paid < expected.total:
        raise InvalidMessage(
            f"{where}: sale {sale.book}-{sale.number} paid {paid} of {expected.total}"
        )


def file_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
