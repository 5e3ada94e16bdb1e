"""Business rules the types cannot express: each rejects with a reason a person can act on."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from cajasync.errors import InvalidMessage
from outbox.record import WEEKLY_CHUNK_SIZE
from schemas import (
    CashPayment,
    MethodTotal,
    OpEnvelope,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    TaxTotal,
    WeeklyFileChunk,
    ZClose,
    decode_op,
    encode,
)
from schemas.limits import ENVELOPE_ROOM, MAX_INT, MAX_OP_BYTES, MAX_OPERATION_BYTES
from schemas.validation import check_size, file_sha256, validate
from tests.unit.strategies import (
    cash_payments,
    envelopes,
    money,
    operations,
    sales,
    weekly_file_chunks,
    z_closes,
)

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)


def _envelope(op: Any, *, terminal: str = "CAJA-07", seq: int = 311) -> OpEnvelope:
    return OpEnvelope(
        terminal=terminal, seq=seq, op_id=uuid.UUID(int=5), version=1, recorded_at=NOW, op=op
    )


def _rejection(envelope: OpEnvelope) -> str:
    """The reason validate gives, checked to name the terminal and seq."""
    with pytest.raises(InvalidMessage) as caught:
        validate(envelope)
    reason = caught.value.reason
    assert f"terminal {envelope.terminal} seq {envelope.seq} " in reason
    return reason


def _sale_rejection(sale: Sale) -> str:
    reason = _rejection(_envelope(sale))
    assert f"sale {sale.book}-{sale.number} " in reason
    return reason


def _line(*, unit_price: str = "100.00", tax_rate: str = "21") -> SaleLine:
    return SaleLine(
        product="YERBA-1KG",
        quantity=Decimal(2),
        unit_price=Decimal(unit_price),
        tax_rate=Decimal(tax_rate),
    )


def _sale(*lines: SaleLine, paid: str | None = None) -> Sale:
    totals = SaleTotals.of(list(lines))
    return Sale(
        book="0003-A",
        number=1201,
        date=NOW,
        seller="ana",
        lines=list(lines),
        payments=[SalePayment(method="cash", amount=Decimal(paid) if paid else totals.total)],
        totals=totals,
    )


# Valid operations pass -----------------------------------------------------------------


@given(envelopes(operations))
def test_any_valid_operation_passes(envelope: OpEnvelope) -> None:
    validate(envelope)


def test_a_plain_sale_paid_in_full_passes() -> None:
    sale = _sale(_line(), _line(unit_price="0.10", tax_rate="10.5"))
    assert sale.totals == SaleTotals(
        net=Decimal("200.20"), tax=Decimal("42.02"), total=Decimal("242.22")
    )
    validate(_envelope(sale))


@given(sales())
def test_voided_sale_passes_even_when_nothing_was_paid(sale: Sale) -> None:
    validate(_envelope(replace(sale, voided=True, payments=[])))


@given(sales(), money(1, 100_000))
def test_overpaid_sale_passes_because_change_is_given_back(sale: Sale, extra: Decimal) -> None:
    paid = [*sale.payments, SalePayment(method="cash", amount=extra)]
    validate(_envelope(replace(sale, payments=paid)))


# Sales ---------------------------------------------------------------------------------


@given(sales(), money(1, 100_000), st.sampled_from(["net", "tax", "total"]))
def test_sale_whose_totals_do_not_match_its_lines_is_rejected(
    sale: Sale, delta: Decimal, field: str
) -> None:
    wrong = replace(sale.totals, **{field: getattr(sale.totals, field) + delta})
    reason = _sale_rejection(replace(sale, totals=wrong))
    assert f"do not match its lines ({sale.totals.total})" in reason


def test_totals_mismatch_reason_shows_both_totals() -> None:
    sale = _sale(_line())
    wrong = replace(sale, totals=replace(sale.totals, total=Decimal("240.00")))
    reason = _sale_rejection(wrong)
    assert reason.endswith("sale 0003-A-1201 totals 240.00 do not match its lines (242.00)")


@given(sales())
def test_sale_without_lines_is_rejected(sale: Sale) -> None:
    empty = replace(sale, lines=[], totals=SaleTotals.of([]))
    assert _sale_rejection(empty).endswith("has no lines")


@given(sales().filter(lambda sale: sale.totals.total > 0), st.data())
def test_underpaid_sale_is_rejected(sale: Sale, data: st.DataObject) -> None:
    total_cents = int(sale.totals.total * 100)
    short = data.draw(money(1, total_cents), label="short")
    paid = sale.totals.total - short
    underpaid = replace(sale, voided=False, payments=[SalePayment(method="cash", amount=paid)])
    reason = _sale_rejection(underpaid)
    assert reason.endswith(f"paid {paid} of {sale.totals.total}")


def test_sale_with_no_payments_is_rejected_as_underpaid() -> None:
    sale = replace(_sale(_line()), payments=[])
    assert _sale_rejection(sale).endswith("paid 0.00 of 242.00")


@given(
    sales(),
    st.one_of(money(10_001, 10**6), money(-(10**6), -1)),
    st.data(),
)
def test_tax_rate_outside_0_to_100_is_rejected(
    sale: Sale, rate: Decimal, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(sale.lines) - 1), label="line")
    lines = list(sale.lines)
    lines[index] = replace(lines[index], tax_rate=rate)
    bad = replace(sale, lines=lines, totals=SaleTotals.of(lines))
    reason = _sale_rejection(bad)
    assert f"tax rate {rate} of {lines[index].product} not in 0..100" in reason


@pytest.mark.parametrize("rate", ["0", "100"])
def test_tax_rates_0_and_100_are_the_allowed_bounds(rate: str) -> None:
    validate(_envelope(_sale(_line(tax_rate=rate))))


@pytest.mark.parametrize(
    ("change", "path"),
    [
        pytest.param({"unit_price": Decimal("NaN")}, "lines[0].unit_price NaN", id="nan-price"),
        pytest.param({"tax_rate": Decimal("NaN")}, "lines[0].tax_rate NaN", id="nan-rate"),
        pytest.param(
            {"quantity": Decimal("Infinity")}, "lines[0].quantity Infinity", id="inf-quantity"
        ),
        pytest.param({"discount": Decimal("-Infinity")}, "lines[0].discount -Infinity", id="ninf"),
    ],
)
def test_sale_line_with_a_non_finite_number_is_rejected(
    change: dict[str, Decimal], path: str
) -> None:
    sale = _sale(_line())
    bad = replace(sale, lines=[replace(sale.lines[0], **change)])
    assert _rejection(_envelope(bad)).endswith(f"{path} is not a finite number")


def test_sale_paid_with_an_infinite_amount_is_rejected() -> None:
    sale = _sale(_line())
    bad = replace(sale, payments=[SalePayment(method="cash", amount=Decimal("Infinity"))])
    assert "payments[0].amount Infinity is not a finite number" in _rejection(_envelope(bad))


def test_sale_with_amounts_too_large_to_compute_is_rejected() -> None:
    line = replace(_line(), quantity=Decimal("1E+100"))
    bad = replace(_sale(_line()), lines=[line])
    assert _rejection(_envelope(bad)).endswith("an amount is too large to compute with")


# Cash payments -------------------------------------------------------------------------


@given(cash_payments, money(-(10**6), 0))
def test_cash_payment_of_zero_or_less_is_rejected(payment: CashPayment, amount: Decimal) -> None:
    reason = _rejection(_envelope(replace(payment, amount=amount)))
    assert reason.endswith("cash payment amount must be positive")


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "sNaN"])
def test_cash_payment_of_a_non_finite_amount_is_rejected(amount: str) -> None:
    payment = CashPayment(
        kind="transfer",
        payee_kind="supplier",
        payee="distribuidora-sur",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )
    assert _rejection(_envelope(payment)).endswith("is not a finite number")


# Z closes ------------------------------------------------------------------------------


@given(z_closes(), st.integers(1, 10_000))
def test_z_close_whose_first_receipt_is_after_its_last_is_rejected(close: ZClose, gap: int) -> None:
    bad = replace(close, first_receipt=close.last_receipt + gap)
    assert _rejection(_envelope(bad)).endswith("Z close first receipt after last receipt")


@given(z_closes(), st.timedeltas(dt.timedelta(microseconds=1), dt.timedelta(days=30)))
def test_z_close_whose_period_ends_before_it_starts_is_rejected(
    close: ZClose, gap: dt.timedelta
) -> None:
    bad = replace(close, period_end=close.period_start - gap)
    assert _rejection(_envelope(bad)).endswith("Z close period ends before it starts")


@given(z_closes())
def test_z_close_mixing_times_with_and_without_zone_is_rejected(close: ZClose) -> None:
    bad = replace(close, period_end=close.period_end.replace(tzinfo=None))
    assert "Z close period mixes times with and without zone" in _rejection(_envelope(bad))


def test_z_close_of_a_single_receipt_and_an_instant_passes() -> None:
    close = ZClose(
        number=1,
        period_start=NOW,
        period_end=NOW,
        first_receipt=10,
        last_receipt=10,
        sale_count=1,
        totals_by_tax=[],
        totals_by_method=[],
        total=Decimal("0.00"),
    )
    validate(_envelope(close))


# Weekly file chunks --------------------------------------------------------------------


@given(weekly_file_chunks(), st.integers(0, 100))
def test_chunk_index_at_or_past_the_chunk_count_is_rejected(
    chunk: WeeklyFileChunk, past: int
) -> None:
    bad = replace(chunk, chunk_index=chunk.chunk_count + past)
    reason = _rejection(_envelope(bad))
    assert reason.endswith(f"chunk {bad.chunk_index} of a {chunk.chunk_count}-chunk file")


def test_last_chunk_of_a_file_passes() -> None:
    content = b"Z" * 10
    chunk = WeeklyFileChunk(
        week="2026-W09",
        file_name="semanal.txt",
        size=len(content),
        sha256=file_sha256(content),
        chunk_index=2,
        chunk_count=3,
        data=content[8:],
    )
    validate(_envelope(chunk))


@given(st.binary())
def test_file_sha256_is_the_lowercase_hex_digest(content: bytes) -> None:
    digest = file_sha256(content)
    assert len(digest) == 64
    assert digest == digest.lower()


# Amounts: places and range (what NUMERIC(16, 2) holds) -----------------------------------


def _cash(amount: str) -> CashPayment:
    return CashPayment(
        kind="transfer",
        payee_kind="supplier",
        payee="distribuidora-sur",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )


def test_an_amount_with_more_than_two_places_is_rejected_naming_the_field() -> None:
    """The amount that NUMERIC(16, 2) rounds up to 10^14 and PostgreSQL refuses."""
    reason = _rejection(_envelope(_cash("99999999999999.999")))
    assert reason.endswith("cash payment amount 99999999999999.999 has more than 2 decimal places")


@pytest.mark.parametrize("amount", ["100000000000000", "-100000000000000.00", "1E+20"])
def test_an_amount_of_10_to_the_14_or_more_is_rejected(amount: str) -> None:
    reason = _rejection(_envelope(_cash(amount)))
    assert reason.endswith(
        f"cash payment amount {amount} is too large (an amount stays below 100,000,000,000,000)"
    )


def test_the_largest_amount_the_store_holds_passes() -> None:
    validate(_envelope(_cash("99999999999999.99")))


@pytest.mark.parametrize(
    ("path", "change"),
    [
        ("lines[0].unit_price", lambda s: _sale(_line(unit_price="10.005"))),
        ("lines[0].discount", lambda s: _sale(replace(_line(), discount=Decimal("0.001")))),
        ("payments[0].amount", lambda s: replace(s, payments=[_pay("242.001")])),
        ("totals.tax", lambda s: replace(s, totals=replace(s.totals, tax=Decimal("42.0001")))),
    ],
)
def test_every_amount_of_a_sale_is_held_to_cents(path: str, change: Any) -> None:
    bad = change(_sale(_line()))
    assert f"sale 0003-A-1201 {path} " in _rejection(_envelope(bad))
    assert _rejection(_envelope(bad)).endswith("has more than 2 decimal places")


def _pay(amount: str) -> SalePayment:
    return SalePayment(method="cash", amount=Decimal(amount))


@given(z_closes(), st.sampled_from(["total", "totals_by_method", "totals_by_tax"]))
def test_every_amount_of_a_z_close_is_held_to_cents(close: ZClose, field: str) -> None:
    odd = Decimal("0.005")
    if field == "total":
        bad = replace(close, total=close.total + odd)
    elif field == "totals_by_method":
        bad = replace(close, totals_by_method=[MethodTotal(method="cash", amount=odd)])
    else:
        tax = TaxTotal(rate=Decimal("10.5"), net=Decimal(0), tax=odd)
        bad = replace(close, totals_by_tax=[tax])
    assert _rejection(_envelope(bad)).endswith("has more than 2 decimal places")


def test_quantities_and_tax_rates_are_not_amounts_and_may_have_more_places() -> None:
    weighed = replace(_line(), quantity=Decimal("1.235"), tax_rate=Decimal("10.125"))
    validate(_envelope(_sale(weighed)))


# Sales and returns (a return is a sale with kind="return": negative lines and totals) ------


def _return_of(sale: Sale) -> Sale:
    """The return of everything `sale` sold, refunded in cash."""
    lines = [replace(line, quantity=-line.quantity, discount=-line.discount) for line in sale.lines]
    totals = SaleTotals.of(lines)
    refund = SalePayment(method="cash", amount=totals.total)
    return replace(sale, kind="return", lines=lines, totals=totals, payments=[refund])


@given(sales())
def test_the_return_of_any_valid_sale_passes_with_negated_totals(sale: Sale) -> None:
    returned = _return_of(sale)
    assert returned.totals.total == -sale.totals.total
    validate(_envelope(returned))


def test_a_sale_with_a_negative_quantity_is_rejected_and_points_to_returns() -> None:
    bad = _sale(replace(_line(), quantity=Decimal(-2)))
    assert bad.totals.total < 0
    reason = _sale_rejection(bad)
    assert reason.endswith("lines[0] quantity -2 is negative: record a return (kind='return')")


def test_a_sale_whose_discount_exceeds_its_line_is_rejected() -> None:
    bad = _sale(replace(_line(), discount=Decimal("200.01")))
    assert _sale_rejection(bad).endswith("lines[0] discount 200.01 is more than the line's amount")


def test_a_negative_unit_price_is_rejected() -> None:
    bad = _sale(_line(unit_price="-1.00"))
    assert _sale_rejection(bad).endswith("lines[0] unit_price -1.00 is negative")


def test_a_negative_payment_in_a_sale_is_rejected() -> None:
    sale = _sale(_line())
    bad = replace(sale, payments=[_pay("300.00"), _pay("-57.78")])
    assert _sale_rejection(bad).endswith(
        "payments[1].amount -57.78 is negative: a refund belongs to a return"
    )


@given(sales(), st.data())
def test_a_return_with_a_positive_line_is_rejected(sale: Sale, data: st.DataObject) -> None:
    returned = _return_of(sale)
    index = data.draw(st.integers(0, len(sale.lines) - 1), label="line")
    lines = list(returned.lines)
    lines[index] = sale.lines[index]
    bad = replace(returned, lines=lines, totals=SaleTotals.of(lines))
    reason = _rejection(_envelope(bad))
    assert f"return {sale.book}-{sale.number} lines[" in reason


def test_a_return_that_does_not_refund_its_total_is_rejected() -> None:
    returned = _return_of(_sale(_line()))
    short = replace(returned, payments=[_pay("-200.00")])
    assert _rejection(_envelope(short)).endswith("return 0003-A-1201 refunded 200.00 of 242.00")
    positive = replace(returned, payments=[_pay("10.00"), _pay("-252.00")])
    assert _rejection(_envelope(positive)).endswith("payments[0].amount 10.00 is positive")


def test_a_voided_return_passes_without_its_refund() -> None:
    validate(_envelope(replace(_return_of(_sale(_line())), voided=True, payments=[])))


# Envelope and chunk ranges (the store's integer columns) ----------------------------------


@pytest.mark.parametrize("field", ["seq", "version"])
def test_a_seq_or_version_past_32_bits_is_rejected(field: str) -> None:
    envelope = replace(_envelope(_cash("1.00")), **{field: MAX_INT + 1})
    assert _rejection(envelope).endswith(
        f"{field} {MAX_INT + 1} exceeds {MAX_INT}, the largest the server stores"
    )
    validate(replace(envelope, **{field: MAX_INT}))


@given(weekly_file_chunks())
def test_a_chunk_whose_file_name_has_a_nul_is_rejected(chunk: WeeklyFileChunk) -> None:
    bad = replace(chunk, file_name="semanal\x00.txt")
    assert _rejection(_envelope(bad)).endswith("file name contains a NUL character")


# Size (MAX_OP_BYTES) ---------------------------------------------------------------------


def _chunk(data: bytes, name: str = "semanal.txt") -> WeeklyFileChunk:
    return WeeklyFileChunk(
        week="2026-W09",
        file_name=name,
        size=len(data),
        sha256=file_sha256(data),
        chunk_index=0,
        chunk_count=1,
        data=data,
    )


def test_an_operation_over_the_size_limit_is_refused_with_its_size() -> None:
    big = _chunk(b"x" * MAX_OPERATION_BYTES)
    with pytest.raises(InvalidMessage) as caught:
        check_size(big)
    size = len(encode(big))
    assert caught.value.reason == (
        f"weekly file 'semanal.txt' chunk 0 is {size:,} bytes encoded, over the limit of "
        f"{MAX_OPERATION_BYTES:,} bytes per operation; split it"
    )


def test_the_largest_operation_fits_the_decoders_limit_in_the_largest_envelope() -> None:
    """record() and the server agree: what record() lets through, the server decodes."""
    name = "\U0001f600" * 255  # the longest file name, 4 bytes a character
    size = MAX_OPERATION_BYTES - len(encode(_chunk(b"", name)))
    while len(encode(_chunk(b"x" * size, name))) > MAX_OPERATION_BYTES:
        size -= 1
    largest = _chunk(b"x" * size, name)
    check_size(largest)
    envelope = replace(
        _envelope(largest, terminal="T" * 32, seq=MAX_INT),
        version=MAX_INT,
        recorded_at=dt.datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=FAR_ZONE),
    )
    body = encode(envelope)
    assert len(body) - len(encode(largest)) < ENVELOPE_ROOM
    assert decode_op(body) == envelope


FAR_ZONE = dt.timezone(-dt.timedelta(hours=23, minutes=59))


def test_the_decoder_refuses_a_body_over_the_limit_before_decoding_it() -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_op(b"\xff" * (MAX_OP_BYTES + 1))
    assert caught.value.reason == (
        f"operation of {MAX_OP_BYTES + 1:,} bytes is over the limit of {MAX_OP_BYTES:,} bytes"
    )


def test_a_full_weekly_file_chunk_is_well_under_the_limit() -> None:
    full = _chunk(b"x" * WEEKLY_CHUNK_SIZE, name="\U0001f600" * 255)
    assert len(encode(full)) * 3 < MAX_OPERATION_BYTES
    check_size(full)


# The fast pass over numbers agrees with the path-naming walk ----------------------------

_any_decimal = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-(10**15), max_value=10**15, places=3),
    st.sampled_from([Decimal("1.50"), Decimal("1.500"), Decimal("99999999999999.999")]),
)


@given(
    price=_any_decimal,
    discount=_any_decimal,
    quantity=_any_decimal,
    rate=_any_decimal,
    paid=_any_decimal,
)
def test_the_fast_number_pass_agrees_with_the_rules_it_stands_for(
    price: Decimal, discount: Decimal, quantity: Decimal, rate: Decimal, paid: Decimal
) -> None:
    from schemas.validation import _check_number, _decimals, _numbers_ok

    line = replace(_line(), unit_price=price, discount=discount, quantity=quantity, tax_rate=rate)
    sale = replace(_sale(_line()), lines=[line], payments=[SalePayment(method="cash", amount=paid)])
    slow = True
    for path, value, is_money in _decimals(sale, "", money=False):
        try:
            _check_number(path, value, money=is_money)
        except InvalidMessage:
            slow = False
    assert _numbers_ok(sale) is slow
