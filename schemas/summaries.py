"""What an operation is about, in a few columns, decoded without the rest of it.

Views list thousands of operations: a sale's lines and payments or a weekly chunk's data
are not needed to show its ticket number, total and customer. These Structs read the same
bytes as `schemas.ops` (msgpack in a terminal outbox body, JSON in the server's payload)
but name only the fields a view shows; msgspec skips the others without building them.

    summary = summary_of_envelope(outbox_row.body)   # SaleSummary(book="A", number=12, ...)
    columns(summary)                                 # {"book": "A", "number": 12, ...}
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import msgspec

from cajasync.errors import InvalidMessage
from schemas.topics import CASH_PAYMENTS, SALES, WEEKLY_FILES, Z_CLOSES


class TotalOnly(msgspec.Struct, frozen=True, kw_only=True):
    total: Decimal


class SaleSummary(msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=SALES):
    """A sale's ticket: book, number, date, total, customer, kind, voided."""

    book: str
    number: int
    date: dt.datetime
    totals: TotalOnly
    customer: str | None = None
    voided: bool = False
    kind: str = "sale"


class PaymentSummary(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=CASH_PAYMENTS
):
    """A cash payment: kind, payee, amount, method, date."""

    kind: str
    payee_kind: str
    payee: str
    amount: Decimal
    method: str
    date: dt.datetime


class ZSummary(msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=Z_CLOSES):
    """A Z close: number, period, receipts, sale count, total."""

    number: int
    period_start: dt.datetime
    period_end: dt.datetime
    first_receipt: int
    last_receipt: int
    sale_count: int
    total: Decimal


class ChunkSummary(msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=WEEKLY_FILES):
    """A weekly file chunk without its data: which file, which part of it."""

    week: str
    file_name: str
    size: int
    sha256: str
    chunk_index: int
    chunk_count: int


Summary = SaleSummary | PaymentSummary | ZSummary | ChunkSummary


class Undecodable(msgspec.Struct, frozen=True, kw_only=True):
    """A stored body that does not decode (a bad disk, a bug): listed with its reason, never
    skipped and never a crash of the listing."""

    reason: str


class _Envelope(msgspec.Struct, frozen=True, kw_only=True):
    op: Summary


_from_msgpack = msgspec.msgpack.Decoder(_Envelope)
_from_json = msgspec.json.Decoder(Summary)


def summary_of_envelope(body: bytes) -> Summary:
    """The summary of an encoded OpEnvelope (a terminal outbox body); InvalidMessage if it
    does not decode."""
    try:
        return _from_msgpack.decode(body).op
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(f"undecodable operation: {exc}") from exc


def summary_or_reason(body: bytes) -> Summary | Undecodable:
    """`summary_of_envelope`, with an undecodable body as Undecodable instead of an error."""
    try:
        return summary_of_envelope(body)
    except InvalidMessage as exc:
        return Undecodable(reason=exc.reason)


def summary_of_json(payload: str | bytes) -> Summary:
    """The summary of an operation stored as JSON (the server's `payload`)."""
    try:
        return _from_json.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(f"undecodable operation: {exc}") from exc


def columns(summary: Summary | Undecodable) -> dict[str, Any]:
    """The business columns of an operation, flat, for tables and JSON."""
    match summary:
        case Undecodable():
            return {"undecodable": summary.reason}
        case SaleSummary():
            return {
                "book": summary.book,
                "number": summary.number,
                "date": summary.date,
                "total": summary.totals.total,
                "customer": summary.customer,
                "kind": summary.kind,
                "voided": summary.voided,
            }
        case PaymentSummary():
            return {
                "kind": summary.kind,
                "payee_kind": summary.payee_kind,
                "payee": summary.payee,
                "amount": summary.amount,
                "method": summary.method,
                "date": summary.date,
            }
        case ZSummary():
            return {
                "number": summary.number,
                "period_start": summary.period_start,
                "period_end": summary.period_end,
                "first_receipt": summary.first_receipt,
                "last_receipt": summary.last_receipt,
                "sale_count": summary.sale_count,
                "total": summary.total,
            }
        case ChunkSummary():
            return {
                "file_name": summary.file_name,
                "week": summary.week,
                "size": summary.size,
                "sha256": summary.sha256,
                "chunk_index": summary.chunk_index,
                "chunk_count": summary.chunk_count,
            }


def headline(summary: Summary | Undecodable) -> tuple[str, Decimal | None, str | None]:
    """What an operation is in three cells: its reference (ticket `A-12`, `Z 3`, a payee or
    a file name with its chunk), its amount and its customer (or payee)."""
    match summary:
        case Undecodable():
            return "<undecodable>", None, None
        case SaleSummary():
            label = f"{summary.book}-{summary.number}"
            if summary.kind == "return":
                label += " (return)"
            if summary.voided:
                label += " (voided)"
            return label, summary.totals.total, summary.customer
        case PaymentSummary():
            return f"{summary.kind} {summary.method}", summary.amount, summary.payee
        case ZSummary():
            return f"Z {summary.number}", summary.total, None
        case ChunkSummary():
            part = f"{summary.chunk_index + 1}/{summary.chunk_count}"
            return f"{summary.file_name} [{part}]", None, None


def matches(summary: Summary | Undecodable, *, customer: str | None, number: int | None) -> bool:
    """True when the operation has this customer and this number (None: any)."""
    if customer is not None and (
        not isinstance(summary, SaleSummary) or summary.customer != customer
    ):
        return False
    return number is None or (
        isinstance(summary, SaleSummary | ZSummary) and summary.number == number
    )
