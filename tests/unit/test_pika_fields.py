"""pika's field decoding, guarded (cajasync/broker/pika_fields.py): odd values become markers."""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika.data
import pika.exceptions
import pika.spec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cajasync.broker import pika_fields

pika_fields.install()


def table(*fields: tuple[bytes, bytes]) -> bytes:
    """An encoded AMQP table of (name, encoded value) pairs."""
    content = b"".join(bytes([len(name)]) + name + value for name, value in fields)
    return struct.pack(">I", len(content)) + content


def long_int(value: int) -> bytes:
    return b"I" + struct.pack(">i", value)


FAR_TIMESTAMP = b"T" + struct.pack(">Q", 2**38)


def nested(levels: int) -> bytes:
    inner = table((b"leaf", long_int(7)))
    for _ in range(levels - 1):
        inner = table((b"k", b"F" + inner))
    return b"F" + inner


def headers_of(encoded_table: bytes) -> Any:
    """Decode a content header whose only property is this headers table."""
    flags = struct.pack(">H", pika.spec.BasicProperties.FLAG_HEADERS)
    return pika.spec.BasicProperties().decode(flags + encoded_table).headers


def test_install_guards_the_decoders_pika_calls_once() -> None:
    pika_fields.install()
    assert pika.data.decode_value is pika_fields.decode_value
    assert pika.data.decode_short_string is pika_fields.decode_short_string


def test_timestamp_past_year_9999_becomes_a_marker_and_the_next_fields_decode() -> None:
    headers = headers_of(table((b"a", long_int(1)), (b"when", FAR_TIMESTAMP), (b"z", long_int(2))))
    assert headers == {
        "a": 1,
        "when": f"<undecodable timestamp {2**38}: year 10680 is out of range>",
        "z": 2,
    }


def test_odd_value_inside_an_array_is_marked_in_place() -> None:
    items = FAR_TIMESTAMP + long_int(5)
    array = b"A" + struct.pack(">I", len(items)) + items
    assert headers_of(table((b"list", array)))["list"][1] == 5
    assert headers_of(table((b"list", array)))["list"][0].startswith("<undecodable timestamp")


def test_table_nested_past_the_limit_is_a_marker_and_shallower_ones_decode() -> None:
    deep = headers_of(table((b"deep", nested(pika_fields.MAX_DEPTH + 5)), (b"z", long_int(2))))
    value, levels = deep["deep"], 0
    while isinstance(value, dict):
        [value] = value.values()
        levels += 1
    assert (levels, value) == (
        pika_fields.MAX_DEPTH,
        f"<undecodable table: nested deeper than {pika_fields.MAX_DEPTH} levels>",
    )
    assert deep["z"] == 2
    shallow = headers_of(table((b"ok", nested(pika_fields.MAX_DEPTH))))
    assert shallow["ok"] != {}


def test_table_nested_past_the_recursion_limit_does_not_raise() -> None:
    assert "deep" in headers_of(table((b"deep", nested(5000))))


def test_short_string_that_is_not_utf8_comes_back_as_escaped_text() -> None:
    deliver = pika.spec.Basic.Deliver(
        consumer_tag="ctag", delivery_tag=1, exchange="cajasync.up", routing_key=b"op.\xff.v"
    )
    decoded = pika.spec.Basic.Deliver().decode(b"".join(deliver.encode()))
    assert decoded.routing_key == "op.\\xff.v"
    assert headers_of(table((b"k\xfe", long_int(1)))) == {"k\\xfe": 1}


def test_value_of_an_unknown_type_is_left_to_pika() -> None:
    """Its length is unknown, so nothing after it can be found (RabbitMQ refuses it)."""
    with pytest.raises(pika.exceptions.InvalidFieldTypeException):
        headers_of(table((b"odd", b"Z\x00\x00\x00\x00")))


def test_field_end_follows_from_its_type_or_length_prefix() -> None:
    assert pika_fields.end_of(b"T" + bytes(8), 0) == 9
    assert pika_fields.end_of(b"S" + struct.pack(">I", 3) + b"abc", 0) == 8
    assert pika_fields.end_of(b"S" + struct.pack(">I", 30) + b"abc", 0) is None  # truncated
    assert pika_fields.end_of(b"Z", 0) is None


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(9999, 12, 31),
        timezones=st.just(dt.UTC),
    ).map(lambda t: t.replace(microsecond=0)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_tables_pika_encodes_decode_as_they_did_without_the_guard(headers: dict[str, Any]) -> None:
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, headers)
    encoded = b"".join(pieces)
    guarded = pika.data.decode_table(encoded, 0)
    with unguarded():
        assert pika.data.decode_table(encoded, 0) == guarded


@contextmanager
def unguarded() -> Iterator[None]:
    pika.data.decode_value, pika.data.decode_short_string = pika_fields.PIKA_DECODERS
    try:
        yield
    finally:
        pika_fields.install()
