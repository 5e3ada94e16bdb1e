"""Encoding and decoding of every message: round trips, exact decimals, evolution, errors."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cajasync.errors import InvalidMessage
from schemas import (
    CashPayment,
    OpEnvelope,
    Receipt,
    ReceiptItem,
    ReplayRequest,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    WeeklyFileChunk,
    ZClose,
    decode_down,
    decode_op,
    encode,
    to_builtins,
    to_json,
    topic_of,
)
from schemas.codec import decode_request
from schemas.feed import HighWaterMark, HighWaterRequest, OutboxRef
from schemas.topics import CASH_PAYMENTS, SALES, UP_TOPICS, WEEKLY_FILES, Z_CLOSES
from tests.unit.strategies import STRATEGIES, down_messages, envelopes, sales

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
TYPES = list(STRATEGIES)


def _line(unit_price: str = "0.10", quantity: str = "3") -> SaleLine:
    return SaleLine(
        product="ALF-01",
        quantity=Decimal(quantity),
        unit_price=Decimal(unit_price),
        tax_rate=Decimal("21"),
    )


def _sale(*lines: SaleLine) -> Sale:
    totals = SaleTotals.of(list(lines))
    return Sale(
        book="0001-B",
        number=42,
        date=NOW,
        seller="ana",
        lines=list(lines),
        payments=[SalePayment(method="cash", amount=totals.total)],
        totals=totals,
    )


def _envelope(op: Any) -> OpEnvelope:
    return OpEnvelope(
        terminal="T01", seq=7, op_id=uuid.UUID(int=7), version=1, recorded_at=NOW, op=op
    )


def _payment() -> CashPayment:
    return CashPayment(
        kind="advance",
        payee_kind="employee",
        payee="juan",
        amount=Decimal("1500.00"),
        method="cash",
        date=NOW,
    )


def _raw_envelope(**changes: Any) -> dict[str, Any]:
    """A valid envelope as plain msgpack builtins, with top-level `changes` applied."""
    raw: dict[str, Any] = msgspec.msgpack.decode(encode(_envelope(_payment())))
    raw.update(changes)
    return raw


# Round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TYPES, ids=lambda t: t.__name__)
@given(data=st.data())
def test_every_type_survives_a_msgpack_round_trip_byte_for_byte(
    kind: type[Any], data: st.DataObject
) -> None:
    value = data.draw(STRATEGIES[kind])
    body = encode(value)
    decoded = msgspec.msgpack.decode(body, type=kind)
    assert decoded == value
    assert encode(decoded) == body  # same bytes: every Decimal kept its exact digits


def test_text_that_is_not_unicode_is_an_invalid_message_naming_it() -> None:
    """A file name read from non-UTF-8 bytes reaches Python as lone surrogates."""
    chunk = WeeklyFileChunk(
        week="2026-W10",
        file_name="semana-\udcf1.txt",  # b"semana-\xf1.txt" read with surrogateescape
        size=0,
        sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        chunk_index=0,
        chunk_count=1,
        data=b"",
    )
    with pytest.raises(InvalidMessage, match=r"'\\udcf1' at position 7 is not valid Unicode"):
        encode(chunk)


@pytest.mark.parametrize("kind", TYPES, ids=lambda t: t.__name__)
@given(data=st.data())
def test_every_type_survives_a_json_round_trip_byte_for_byte(
    kind: type[Any], data: st.DataObject
) -> None:
    value = data.draw(STRATEGIES[kind])
    text = to_json(value)
    decoded = msgspec.json.decode(text, type=kind)
    assert decoded == value
    assert to_json(decoded) == text


@given(envelopes())
def test_any_envelope_decodes_back_to_itself_with_decode_op(envelope: OpEnvelope) -> None:
    decoded = decode_op(encode(envelope))
    assert decoded == envelope
    assert type(decoded.op) is type(envelope.op)


@given(down_messages)
def test_any_receipt_or_replay_request_decodes_back_to_itself_with_decode_down(
    message: Receipt | ReplayRequest,
) -> None:
    decoded = decode_down(encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


@given(envelopes())
def test_datetimes_come_back_aware_in_utc(envelope: OpEnvelope) -> None:
    decoded = decode_op(encode(envelope))
    assert decoded.recorded_at.utcoffset() == dt.timedelta(0)
    assert decoded.recorded_at == envelope.recorded_at


def test_to_builtins_gives_decimals_as_exact_strings_for_display() -> None:
    plain = to_builtins(_sale(_line("0.10")))
    assert plain["lines"][0]["unit_price"] == "0.10"
    assert plain["totals"] == {"net": "0.30", "tax": "0.06", "total": "0.36"}
    assert plain["topic"] == SALES


# Exact decimals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount", ["0.10", "1.00", "100", "0.005", "12345678901234567.89", "-3.50"]
)
def test_decimal_amount_keeps_its_exact_digits_through_msgpack(amount: str) -> None:
    decoded = decode_op(encode(_envelope(_sale(_line(amount)))))
    assert isinstance(decoded.op, Sale)
    assert str(decoded.op.lines[0].unit_price) == amount


@pytest.mark.parametrize(
    "amount", ["0.10", "1.00", "100", "0.005", "12345678901234567.89", "-3.50"]
)
def test_decimal_amount_keeps_its_exact_digits_through_json(amount: str) -> None:
    text = to_json(_sale(_line(amount)))
    assert f'"unit_price":"{amount}"'.encode() in text
    decoded = msgspec.json.decode(text, type=Sale)
    assert str(decoded.lines[0].unit_price) == amount


@given(sales())
def test_sale_totals_keep_two_places_after_a_round_trip(sale: Sale) -> None:
    decoded = decode_op(encode(_envelope(sale))).op
    assert isinstance(decoded, Sale)
    for amount in (decoded.totals.net, decoded.totals.tax, decoded.totals.total):
        assert amount.as_tuple().exponent == -2


# The unions pick the type by tag -------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        (SALES, Sale),
        (CASH_PAYMENTS, CashPayment),
        (Z_CLOSES, ZClose),
        (WEEKLY_FILES, WeeklyFileChunk),
    ],
)
def test_every_up_topic_tag_selects_its_operation_type(topic: str, kind: type[Any]) -> None:
    assert topic in UP_TOPICS
    assert kind.__struct_config__.tag == topic


@given(envelopes())
def test_decode_op_picks_the_operation_type_named_by_the_topic_tag(envelope: OpEnvelope) -> None:
    raw = msgspec.msgpack.decode(encode(envelope))
    assert raw["op"]["topic"] == topic_of(envelope.op)
    assert type(decode_op(encode(envelope)).op) is type(envelope.op)


def test_decode_down_picks_receipt_or_replay_request_by_kind() -> None:
    receipt = Receipt(
        terminal="T01", items=[ReceiptItem(op_id=None, version=None, seq=3, status="acked")]
    )
    replay = ReplayRequest(terminal="T01", from_seq=4, to_seq=9)
    assert msgspec.msgpack.decode(encode(receipt))["kind"] == "receipt"
    assert msgspec.msgpack.decode(encode(replay))["kind"] == "replay"
    assert isinstance(decode_down(encode(receipt)), Receipt)
    assert isinstance(decode_down(encode(replay)), ReplayRequest)


def test_operation_with_an_unknown_topic_is_rejected_naming_the_tag() -> None:
    raw = _raw_envelope()
    raw["op"]["topic"] = "devoluciones"
    with pytest.raises(InvalidMessage, match=r"'devoluciones'.*\$\.op\.topic"):
        decode_op(msgspec.msgpack.encode(raw))


# Schema evolution ----------------------------------------------------------------------


class SaleV1(msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=SALES):
    """A sale as the first terminals sent it: no `customer`, no `voided` yet."""

    book: str
    number: int
    date: dt.datetime
    seller: str
    lines: list[SaleLine]
    payments: list[SalePayment]
    totals: SaleTotals


class EnvelopeV1(msgspec.Struct, frozen=True, kw_only=True):
    terminal: str
    seq: int
    op_id: uuid.UUID
    version: int
    recorded_at: dt.datetime
    op: SaleV1


class EnvelopeV2(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope before terminal incarnations, with today's operations."""

    terminal: str
    seq: int
    op_id: uuid.UUID
    version: int
    recorded_at: dt.datetime
    op: Sale


class ReceiptItemV1(msgspec.Struct, frozen=True, kw_only=True):
    op_id: uuid.UUID | None
    version: int | None
    seq: int | None
    status: str


class ReceiptV1(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="receipt"):
    terminal: str
    items: list[ReceiptItemV1]


class SaleV3(Sale, frozen=True, kw_only=True, tag_field="topic", tag=SALES):
    """A sale from a future terminal, with a field today's server does not know."""

    loyalty_card: str = ""


class EnvelopeV3(OpEnvelope, frozen=True, kw_only=True):
    route: str = ""


def test_old_terminal_sale_without_newer_fields_decodes_with_their_defaults() -> None:
    current = _sale(_line())
    old = SaleV1(**{f: getattr(current, f) for f in SaleV1.__struct_fields__})
    body = encode(
        EnvelopeV1(
            terminal="T01", seq=1, op_id=uuid.UUID(int=1), version=1, recorded_at=NOW, op=old
        )
    )
    decoded = decode_op(body).op
    assert isinstance(decoded, Sale)
    assert decoded.customer is None
    assert decoded.voided is False
    assert decoded == current


def test_old_server_receipt_without_reason_decodes_with_an_empty_reason() -> None:
    old = ReceiptV1(
        terminal="T01", items=[ReceiptItemV1(op_id=None, version=1, seq=5, status="acked")]
    )
    decoded = decode_down(encode(old))
    assert isinstance(decoded, Receipt)
    assert decoded.items[0].reason == ""


def test_envelope_of_an_older_terminal_has_no_incarnation() -> None:
    current = _sale(_line())
    old = SaleV1(**{f: getattr(current, f) for f in SaleV1.__struct_fields__})
    body = encode(
        EnvelopeV1(
            terminal="T01", seq=1, op_id=uuid.UUID(int=1), version=1, recorded_at=NOW, op=old
        )
    )
    assert decode_op(body).incarnation is None


def test_older_server_decodes_an_envelope_with_an_incarnation() -> None:
    current = _sale(_line())
    envelope = msgspec.structs.replace(_envelope(current), incarnation=uuid.UUID(int=9))
    older = msgspec.msgpack.decode(encode(envelope), type=EnvelopeV2)
    assert (older.seq, older.op) == (7, current)


def test_high_water_request_and_answer_travel_in_their_unions() -> None:
    request = HighWaterRequest(
        terminal="T01",
        request_id="r1",
        incarnation=uuid.UUID(int=3),
        last_seq=640,
        rows=[OutboxRef(seq=641, op_id=str(uuid.UUID(int=4)), version=1)],
    )
    mark = HighWaterMark(
        request_id="r1",
        terminal="T01",
        max_seq=812,
        contiguous_seq=812,
        held=812,
        incarnation=uuid.UUID(int=3),
        start_seq=812,
    )
    assert decode_request(encode(request)) == request
    assert decode_down(encode(mark)) == mark


def test_high_water_request_with_a_seq_beyond_the_stores_columns_is_invalid() -> None:
    raw = msgspec.msgpack.decode(
        encode(HighWaterRequest(terminal="T01", request_id="r1", incarnation=uuid.UUID(int=3)))
    )
    raw["rows"] = [{"seq": 2**31, "op_id": "x", "version": 1}]
    with pytest.raises(InvalidMessage, match=r"rows\[0\]\.seq"):
        decode_request(msgspec.msgpack.encode(raw))


def test_newer_sale_with_an_unknown_field_decodes_in_the_current_type() -> None:
    current = _sale(_line())
    newer = SaleV3(**msgspec.structs.asdict(current), loyalty_card="9876")
    body = encode(
        EnvelopeV3(
            terminal="T01",
            seq=1,
            op_id=uuid.UUID(int=1),
            version=1,
            recorded_at=NOW,
            op=newer,
            route="fast",
        )
    )
    assert b"loyalty_card" in body
    decoded = decode_op(body)
    assert type(decoded.op) is Sale
    assert decoded.op == current


future_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(),
    st.binary(),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(), st.text(), max_size=2),
)


@given(envelopes(), st.dictionaries(st.text().map(lambda k: f"x_{k}"), future_values))
def test_unknown_fields_anywhere_in_an_envelope_are_ignored(
    envelope: OpEnvelope, extra: dict[str, object]
) -> None:
    raw = msgspec.msgpack.decode(encode(envelope))
    raw.update(extra)
    raw["op"].update(extra)
    assert decode_op(msgspec.msgpack.encode(raw)) == envelope


# Garbage and wrong types ---------------------------------------------------------------


@given(st.binary())
def test_garbage_bytes_raise_invalid_message_for_operations(body: bytes) -> None:
    with pytest.raises(InvalidMessage, match=r"^undecodable operation: ") as caught:
        decode_op(body)
    assert str(caught.value) == caught.value.reason


@given(st.binary())
def test_garbage_bytes_raise_invalid_message_for_server_messages(body: bytes) -> None:
    with pytest.raises(InvalidMessage, match=r"^undecodable server message: "):
        decode_down(body)


def test_a_json_body_is_not_mistaken_for_msgpack() -> None:
    with pytest.raises(InvalidMessage, match="undecodable operation"):
        decode_op(to_json(_envelope(_payment())))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"seq": "7"}, r"Expected `int`, got `str` - at `\$\.seq`", id="seq-str"),
        pytest.param({"seq": 0}, r"Expected `int` >= 1 - at `\$\.seq`", id="seq-zero"),
        pytest.param({"version": 0}, r"Expected `int` >= 1 - at `\$\.version`", id="version-zero"),
        pytest.param({"terminal": "T.01"}, r"matching regex .* - at `\$\.terminal`", id="dot"),
        pytest.param({"terminal": "T01\n"}, r"matching regex .* - at `\$\.terminal`", id="newline"),
        pytest.param({"terminal": "T" * 33}, r"matching regex .* - at `\$\.terminal`", id="long"),
        pytest.param({"op_id": "not-a-uuid"}, r"Invalid UUID - at `\$\.op_id`", id="op-id"),
        pytest.param(
            {"recorded_at": "yesterday"},
            r"Invalid RFC3339 encoded datetime - at `\$\.recorded_at`",
            id="recorded-at",
        ),
        pytest.param({"op": []}, r"Expected `object`, got `array` - at `\$\.op`", id="op-list"),
        pytest.param(
            {"op": {"amount": "1"}}, r"missing required field `topic` - at `\$\.op`", id="no-tag"
        ),
    ],
)
def test_wrong_types_raise_invalid_message_naming_the_field(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        decode_op(msgspec.msgpack.encode(_raw_envelope(**changes)))


def test_missing_field_raises_invalid_message_naming_it() -> None:
    raw = _raw_envelope()
    del raw["op_id"]
    with pytest.raises(InvalidMessage, match="Object missing required field `op_id`"):
        decode_op(msgspec.msgpack.encode(raw))


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("amount", "mil", r"\$\.op\.amount"),
        ("kind", "loan", r"\$\.op\.kind"),
        ("payee", "", r"\$\.op\.payee"),
        ("date", 12.5, r"\$\.op\.date"),
    ],
)
def test_wrong_operation_field_raises_invalid_message_with_its_path(
    field: str, value: object, path: str
) -> None:
    raw = _raw_envelope()
    raw["op"][field] = value
    with pytest.raises(InvalidMessage, match=path):
        decode_op(msgspec.msgpack.encode(raw))


def test_card_last4_with_a_trailing_newline_is_rejected() -> None:
    raw = msgspec.msgpack.decode(encode(_sale(_line())))
    raw["payments"][0]["card"] = {"bank": "Galicia", "brand": "VISA", "last4": "1234\n"}
    with pytest.raises(InvalidMessage, match=r"\$\.op\.payments\[0\]\.card\.last4"):
        decode_op(msgspec.msgpack.encode(_raw_envelope(op=raw)))


def test_replay_request_with_a_wrong_kind_raises_invalid_message() -> None:
    raw = msgspec.msgpack.decode(encode(ReplayRequest(terminal="T01", from_seq=1, to_seq=2)))
    raw["kind"] = "rewind"
    with pytest.raises(InvalidMessage, match=r"Invalid value 'rewind' - at `\$\.kind`"):
        decode_down(msgspec.msgpack.encode(raw))
