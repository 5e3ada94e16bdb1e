"""A float where the schemas hold an exact decimal is refused at every edge, naming the field:
msgspec would decode it into a Decimal without a word (schemas/floats.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from msgspec.structs import replace

from cajasync.errors import CatalogError, InvalidMessage
from outbox.catalog import check_records
from schemas import OpEnvelope, Sale, SaleLine, SalePayment, SaleTotals, decode_op, encode
from schemas.codec import decode_terminal_inbox
from schemas.feed import Change, ChangeEvent, stream_name
from schemas.floats import float_problem
from schemas.records import Product
from schemas.validation import validate_operation
from tests.unit.strategies import envelopes, weekly_file_chunks

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)


def _sale() -> Sale:
    lines = [
        SaleLine(
            product="YERBA", quantity=Decimal(2), unit_price=Decimal("1.10"), tax_rate=Decimal(21)
        )
    ]
    totals = SaleTotals.of(lines)
    return Sale(
        book="0003-A",
        number=7,
        date=NOW,
        seller="ana",
        lines=lines,
        payments=[SalePayment(method="cash", amount=totals.total)],
        totals=totals,
    )


def _envelope(op: Any) -> OpEnvelope:
    return OpEnvelope(
        terminal="CAJA-07", seq=3, op_id=uuid.UUID(int=9), version=1, recorded_at=NOW, op=op
    )


def float_body(envelope: OpEnvelope, edit: Any) -> bytes:
    """The envelope as another encoder would send it, after `edit` on its builtins."""
    raw = msgspec.to_builtins(envelope)
    edit(raw)
    return msgspec.msgpack.encode(raw)


def test_a_float_unit_price_is_refused_at_decode_naming_its_field() -> None:
    def edit(raw: Any) -> None:
        raw["op"]["lines"][0]["unit_price"] = 1.1

    with pytest.raises(InvalidMessage) as caught:
        decode_op(float_body(_envelope(_sale()), edit))
    assert caught.value.reason == (
        f"terminal CAJA-07 seq 3 op {uuid.UUID(int=9)}: "
        "op.lines[0].unit_price: 1.1 is a float; amounts travel as decimal strings"
    )


def test_a_float_quantity_or_payment_is_refused_too() -> None:
    def quantity(raw: Any) -> None:
        raw["op"]["lines"][0]["quantity"] = 2.0

    def payment(raw: Any) -> None:
        raw["op"]["payments"][0]["amount"] = 2.66

    for edit, field in ((quantity, "op.lines[0].quantity: 2.0"), (payment, "op.payments[0]")):
        with pytest.raises(InvalidMessage, match=r"is a float"):
            decode_op(float_body(_envelope(_sale()), edit))
        with pytest.raises(InvalidMessage) as caught:
            decode_op(float_body(_envelope(_sale()), edit))
        assert field in caught.value.reason


def test_a_float_in_a_field_the_schema_does_not_know_is_not_ours_to_judge() -> None:
    def edit(raw: Any) -> None:
        raw["op"]["lines"][0]["weight_kg"] = 1.25  # a newer terminal's field

    envelope = decode_op(float_body(_envelope(_sale()), edit))
    assert envelope.op == _sale()


@given(envelopes())
def test_every_operation_cajasync_encodes_decodes_unchanged(envelope: OpEnvelope) -> None:
    assert decode_op(encode(envelope)) == envelope


@given(weekly_file_chunks())
def test_float_marker_bytes_inside_binary_data_are_no_float(chunk: Any) -> None:
    chunk = replace(chunk, data=b"\xca\xcb" * 10 + chunk.data)
    envelope = _envelope(chunk)
    assert decode_op(encode(envelope)) == envelope


def test_a_float_in_a_record_mapping_is_named_by_its_key() -> None:
    product = Product(
        key="P1", version=1, name="Yerba", price=Decimal("1.10"), tax_rate=Decimal(21)
    )
    raw = msgspec.to_builtins(product)
    raw["prices"] = {"mayorista": 0.95}
    body = msgspec.msgpack.encode(raw)
    typed = msgspec.msgpack.decode(body, type=Product)
    assert float_problem(body, typed) == (
        "prices['mayorista']: 0.95 is a float; amounts travel as decimal strings"
    )


def test_record_refuses_a_python_float_amount_naming_its_field() -> None:
    sale = _sale()
    line = replace(sale.lines[0], unit_price=1.1)
    with pytest.raises(InvalidMessage) as caught:
        validate_operation(replace(sale, lines=[line]))
    assert caught.value.reason == (
        "sale 0003-A-7 lines[0].unit_price: 1.1 is a float; amounts travel as decimal strings"
    )


def test_record_refuses_an_int_where_a_decimal_belongs() -> None:
    sale = _sale()
    payment = replace(sale.payments[0], amount=3)
    with pytest.raises(InvalidMessage, match=r"payments\[0\]\.amount: 3 is a int, not a Decimal"):
        validate_operation(replace(sale, payments=[payment]))


def test_the_catalog_refuses_a_python_float_price() -> None:
    product = Product(key="P1", version=1, name="Yerba", price=1.1, tax_rate=Decimal(21))
    with pytest.raises(CatalogError, match=r"record 0 \('P1'\): price: 1.1 is a float"):
        check_records([product])


def test_a_change_event_with_a_float_price_is_refused_by_the_terminal() -> None:
    product = Product(
        key="P1", version=1, name="Yerba", price=Decimal("1.10"), tax_rate=Decimal(21)
    )
    change = Change(
        stream=stream_name("productos", "all"),
        seq=1,
        topic="productos",
        key="P1",
        version=1,
        record=product,
    )
    raw = msgspec.to_builtins(ChangeEvent(changes=[change]))
    raw["changes"][0]["record"]["price"] = 1.1
    with pytest.raises(InvalidMessage, match=r"changes\[0\]\.record\.price: 1.1 is a float"):
        decode_terminal_inbox(msgspec.msgpack.encode(raw))
