"""Hypothesis strategies for every schema type.

Money is an exact Decimal with two places (never a float), datetimes are aware UTC, and
every operation these strategies draw passes `schemas.validation.validate`: sale totals
come from `SaleTotals.of(lines)`, sales are fully paid, returns (negative lines) fully
refunded, chunks carry the sha256 of the file they were cut from. Tests that need a
broken operation break a valid one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import string
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import msgspec
from hypothesis import strategies as st

from schemas import (
    CardData,
    CashPayment,
    MethodTotal,
    OpEnvelope,
    Operation,
    Receipt,
    ReceiptItem,
    ReplayRequest,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    TaxTotal,
    WeeklyFileChunk,
    ZClose,
)
from schemas.feed import MAX_SEQ, HighWaterMark, HighWaterRequest, OutboxRef
from schemas.limits import MAX_INT

TAX_RATES = tuple(Decimal(rate) for rate in ("0", "10.5", "21", "27"))
ID_ALPHABET = string.ascii_letters + string.digits + "_-"

terminal_ids = st.text(ID_ALPHABET, min_size=1, max_size=32)
codes = st.text(ID_ALPHABET + " .", min_size=1, max_size=64)
texts = st.text(max_size=40)
seqs = st.integers(min_value=1, max_value=2**53)
stored_seqs = st.integers(min_value=1, max_value=MAX_INT)  # what an envelope may carry
versions = st.integers(min_value=1, max_value=1000)
utc_datetimes = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2100, 1, 1),
    timezones=st.just(dt.UTC),
)


def money(min_cents: int = 0, max_cents: int = 10_000_000) -> st.SearchStrategy[Decimal]:
    """Amounts with exactly two places, from `min_cents` to `max_cents` hundredths."""
    return st.integers(min_cents, max_cents).map(lambda n: Decimal(n).scaleb(-2))


def _floor_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value(rounding=ROUND_FLOOR))


quantities = st.one_of(
    st.integers(1, 20).map(Decimal),
    st.integers(1, 100_000).map(lambda n: Decimal(n).scaleb(-3)),  # weighed goods, in kg
)
tax_rates = st.one_of(st.sampled_from(TAX_RATES), money(0, 100_00))


@st.composite
def sale_lines(draw: st.DrawFn) -> SaleLine:
    """A line whose discount never exceeds its gross amount."""
    quantity = draw(quantities)
    unit_price = draw(money(0, 1_000_000))
    max_discount = _floor_cents(quantity * unit_price)
    discount = draw(st.one_of(st.just(Decimal("0.00")), money(0, max_discount)))
    return SaleLine(
        product=draw(codes),
        description=draw(texts),
        quantity=quantity,
        unit_price=unit_price,
        discount=discount,
        tax_rate=draw(tax_rates),
    )


card_data = st.builds(
    CardData,
    bank=texts,
    brand=st.sampled_from(["VISA", "MASTERCARD", "AMEX", "CABAL", "NARANJA"]),
    last4=st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    installments=st.integers(1, 24),
    authorization=st.text(string.digits, max_size=12),
)


@st.composite
def payments_of(draw: st.DrawFn, total: Decimal) -> list[SalePayment]:
    """One to three payments adding up to `total`, sometimes with change on top."""
    total_cents = _floor_cents(total)
    cuts = sorted(draw(st.lists(st.integers(0, total_cents), max_size=2)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, total_cents], strict=True)]
    parts[-1] += draw(st.one_of(st.just(0), st.integers(1, 100_000)))  # change given back
    payments = []
    for part in parts:
        card = draw(st.none() | card_data)
        method = "cash" if card is None else "card"
        payments.append(SalePayment(method=method, amount=Decimal(part).scaleb(-2), card=card))
    return payments


@st.composite
def sales(draw: st.DrawFn) -> Sale:
    """A valid sale: totals computed from its lines, paid in full."""
    lines = draw(st.lists(sale_lines(), min_size=1, max_size=5))
    totals = SaleTotals.of(lines)
    return Sale(
        book=draw(codes),
        number=draw(st.integers(0, 99_999_999)),
        date=draw(utc_datetimes),
        seller=draw(codes),
        lines=lines,
        payments=draw(payments_of(totals.total)),
        totals=totals,
        customer=draw(st.none() | texts),
        voided=draw(st.booleans()),
    )


@st.composite
def returns(draw: st.DrawFn) -> Sale:
    """A valid return: a sale's lines with negated quantities and discounts, refunded."""
    sale = draw(sales())
    lines = [
        msgspec.structs.replace(line, quantity=-line.quantity, discount=-line.discount)
        for line in sale.lines
    ]
    totals = SaleTotals.of(lines)
    refund = SalePayment(method="cash", amount=totals.total)
    return msgspec.structs.replace(
        sale, kind="return", lines=lines, totals=totals, payments=[refund]
    )


sale_payments = st.builds(SalePayment, method=codes, amount=money(), card=st.none() | card_data)
sale_totals = st.lists(sale_lines(), max_size=3).map(SaleTotals.of)

cash_payments = st.builds(
    CashPayment,
    kind=st.sampled_from(["transfer", "advance"]),
    payee_kind=st.sampled_from(["supplier", "employee"]),
    payee=codes,
    amount=money(1),
    method=codes,
    date=utc_datetimes,
    note=texts,
)

tax_totals = st.builds(TaxTotal, rate=st.sampled_from(TAX_RATES), net=money(), tax=money())
method_totals = st.builds(MethodTotal, method=codes, amount=money())


@st.composite
def z_closes(draw: st.DrawFn) -> ZClose:
    """A valid Z close: receipts and period in order, total = sum of the method totals."""
    start = draw(utc_datetimes)
    first = draw(st.integers(0, 10**8))
    by_method = draw(st.lists(method_totals, max_size=4))
    return ZClose(
        number=draw(st.integers(1, 10**6)),
        period_start=start,
        period_end=start + draw(st.timedeltas(dt.timedelta(0), dt.timedelta(days=2))),
        first_receipt=first,
        last_receipt=first + draw(st.integers(0, 10_000)),
        sale_count=draw(st.integers(0, 10_000)),
        totals_by_tax=draw(st.lists(tax_totals, max_size=4)),
        totals_by_method=by_method,
        total=sum((m.amount for m in by_method), Decimal("0.00")),
    )


weeks = st.builds(
    lambda year, week: f"{year:04d}-W{week:02d}", st.integers(2000, 2100), st.integers(1, 53)
)


@st.composite
def weekly_file_chunks(draw: st.DrawFn) -> WeeklyFileChunk:
    """One chunk cut from a drawn file, carrying that file's size and sha256."""
    content = draw(st.binary(max_size=2048))
    chunk_size = draw(st.integers(1, 1024))
    count = max(1, -(-len(content) // chunk_size))
    index = draw(st.integers(0, count - 1))
    return WeeklyFileChunk(
        week=draw(weeks),
        file_name=draw(
            st.text(
                st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
                min_size=1,
                max_size=60,
            )
        ),
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        chunk_index=index,
        chunk_count=count,
        data=content[index * chunk_size : (index + 1) * chunk_size],
    )


operations: st.SearchStrategy[Operation] = st.one_of(
    sales(), returns(), cash_payments, z_closes(), weekly_file_chunks()
)


def envelopes(ops: st.SearchStrategy[Any] = operations) -> st.SearchStrategy[OpEnvelope]:
    """Envelopes around `ops` (any operation by default)."""
    return st.builds(
        OpEnvelope,
        terminal=terminal_ids,
        seq=stored_seqs,
        op_id=st.uuids(),
        version=versions,
        recorded_at=utc_datetimes,
        op=ops,
        incarnation=st.none() | st.uuids(),
    )


receipt_items = st.builds(
    ReceiptItem,
    op_id=st.none() | st.uuids(),
    version=st.none() | versions,
    seq=st.none() | seqs,
    status=st.sampled_from(["acked", "rejected"]),
    reason=texts,
)
receipts = st.builds(Receipt, terminal=terminal_ids, items=st.lists(receipt_items, max_size=5))


@st.composite
def replay_requests(draw: st.DrawFn) -> ReplayRequest:
    from_seq = draw(seqs)
    return ReplayRequest(
        terminal=draw(terminal_ids),
        from_seq=from_seq,
        to_seq=from_seq + draw(st.integers(0, 10_000)),
    )


down_messages: st.SearchStrategy[Receipt | ReplayRequest] = st.one_of(receipts, replay_requests())

held_seqs = st.integers(min_value=1, max_value=MAX_SEQ)
outbox_refs = st.builds(
    OutboxRef,
    seq=held_seqs,
    op_id=st.uuids().map(str) | held_seqs.map(lambda seq: f"bad:T1:{seq}"),
    version=st.integers(0, 1000),
)
high_water_requests = st.builds(
    HighWaterRequest,
    terminal=terminal_ids,
    request_id=st.uuids().map(str),
    incarnation=st.uuids(),
    last_seq=st.integers(0, MAX_SEQ),
    rows=st.lists(outbox_refs, max_size=5),
)
high_water_marks = st.builds(
    HighWaterMark,
    request_id=st.uuids().map(str),
    terminal=terminal_ids,
    max_seq=st.integers(0, MAX_SEQ),
    contiguous_seq=st.integers(0, MAX_SEQ),
    held=st.integers(0, MAX_SEQ),
    incarnation=st.uuids(),
    start_seq=st.integers(0, MAX_SEQ),
    held_rows=st.lists(outbox_refs, max_size=5),
)

STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    CardData: card_data,
    SaleLine: sale_lines(),
    SalePayment: sale_payments,
    SaleTotals: sale_totals,
    Sale: sales(),
    CashPayment: cash_payments,
    TaxTotal: tax_totals,
    MethodTotal: method_totals,
    ZClose: z_closes(),
    WeeklyFileChunk: weekly_file_chunks(),
    OpEnvelope: envelopes(),
    ReceiptItem: receipt_items,
    Receipt: receipts,
    ReplayRequest: replay_requests(),
    OutboxRef: outbox_refs,
    HighWaterRequest: high_water_requests,
    HighWaterMark: high_water_marks,
}
"""One strategy per schema type, for tests that run over all of them."""
