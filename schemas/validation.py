"""Business checks the types cannot express; a failure rejects the operation with a reason."""

from __future__ import annotations

import hashlib

from cajasync.errors import InvalidMessage
from schemas.envelope import OpEnvelope
from schemas.ops import CashPayment, Sale, SaleTotals, WeeklyFileChunk, ZClose


def validate(envelope: OpEnvelope) -> None:
    """Raise InvalidMessage naming the first broken rule of the operation."""
    where = f"terminal {envelope.terminal} seq {envelope.seq} op {envelope.op_id}"
    match envelope.op:
        case Sale() as sale:
            _check_sale(sale, where)
        case CashPayment() as payment:
            if payment.amount <= 0:
                raise InvalidMessage(f"{where}: cash payment amount must be positive")
        case ZClose() as close:
            if close.first_receipt > close.last_receipt:
                raise InvalidMessage(f"{where}: Z close first receipt after last receipt")
            if close.period_start > close.period_end:
                raise InvalidMessage(f"{where}: Z close period ends before it starts")
        case WeeklyFileChunk() as chunk:
            if chunk.chunk_index >= chunk.chunk_count:
                raise InvalidMessage(
                    f"{where}: chunk {chunk.chunk_index} of a {chunk.chunk_count}-chunk file"
                )


def _check_sale(sale: Sale, where: str) -> None:
    if not sale.lines:
        raise InvalidMessage(f"{where}: sale {sale.book}-{sale.number} has no lines")
    for line in sale.lines:
        if not 0 <= line.tax_rate <= 100:
            raise InvalidMessage(f"{where}: tax rate {line.tax_rate} of {line.product} not in 0..100")
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
