"""pika's field decoding, guarded: an odd header value reaches its consumer as a marker
instead of dropping the connection.

RabbitMQ passes a message's headers table on as its publisher encoded it, and pika decodes
it while it parses the content-header frame (pika/spec.py `BasicProperties.decode` ->
pika/data.py `decode_table` -> `decode_value`, recursively). An exception there is not the
message's but the connection's: pika closes the socket (StreamLostError), the message and
every unacked one in its window are delivered again, fail again, and the quorum queue's
delivery limit finally dead-letters them all without a reason, good operations included.
RabbitMQ (3.10) accepts two such values; it refuses NaN floats and unknown field types:

* a timestamp past year 9999 (`T` 2**38 s: "year 10680 is out of range");
* tables or arrays nested deeper than Python's recursion limit (RecursionError).

And a short string that is not UTF-8 (a routing key, message id, content type or header
name) comes back from pika as bytes, where every consumer expects str and fails on it.

`install()` (cajasync.broker.rabbitmq calls it before it opens any connection) replaces pika.data's
`decode_value` and `decode_short_string`, which pika/spec.py and pika.data's own recursion
look up at call time, with guarded versions; once per process, for every pika connection:

* a value pika cannot decode becomes a marker string, `<undecodable timestamp
  274877906944: year 10680 is out of range>`, and the fields after it decode as usual (the
  length of every AMQP field follows from its type or its length prefix);
* a table or array nested deeper than MAX_DEPTH becomes `<undecodable table: nested deeper
  than 32 levels>`, without decoding what is inside;
* a short string that is not UTF-8 is decoded with backslash escapes (`op.\\xff.ventas`).

The message is then delivered and judged by its body, routing key and user like any other:
no cajasync consumer reads a header for a verdict, so a marker changes none, and a dead
letter carries the markers in its headers for the operator to see. A value whose length is
unknown (an unknown field type, which RabbitMQ refuses anyway) is left to pika as before.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import Any, Final

import pika.data

log = logging.getLogger(__name__)

MAX_DEPTH: Final = 32
"""Tables and arrays nested deeper than this are not decoded (cajasync's own are flat)."""

_FIXED: Final = {
    b"t": 1, b"b": 1, b"B": 1, b"U": 2, b"u": 2, b"s": 2, b"I": 4, b"i": 4, b"f": 4,
    b"D": 5, b"L": 8, b"l": 8, b"d": 8, b"T": 8, b"V": 0,
}  # fmt: skip
_PREFIXED: Final = frozenset({b"S", b"x", b"A", b"F"})  # a 32-bit length, then that many bytes
_NESTED: Final = frozenset({b"A", b"F"})
_NAMES: Final = {b"T": "timestamp", b"F": "table", b"A": "array", b"D": "decimal"}

PIKA_DECODERS: Final = (pika.data.decode_value, pika.data.decode_short_string)
"""pika's own `decode_value` and `decode_short_string`, which the guarded ones call."""
_pika_decode_value, _pika_decode_short_string = PIKA_DECODERS
_nesting = threading.local()  # how deep the table being decoded on this thread is


def install() -> None:
    """Guard pika's field decoding in this process (idempotent)."""
    if pika.data.decode_value is not decode_value:
        pika.data.decode_value = decode_value
        pika.data.decode_short_string = decode_short_string


def decode_value(encoded: bytes, offset: int) -> tuple[Any, int]:
    """pika's `decode_value`, with a marker string for a value it cannot decode."""
    kind = encoded[offset : offset + 1]
    if kind not in _NESTED:
        return _guarded(kind, encoded, offset)
    depth = getattr(_nesting, "depth", 0)
    if depth >= MAX_DEPTH:
        end = end_of(encoded, offset)
        if end is not None:
            return _marker(kind, encoded, offset, f"nested deeper than {MAX_DEPTH} levels"), end
    _nesting.depth = depth + 1
    try:
        return _guarded(kind, encoded, offset)
    finally:
        _nesting.depth = depth


def decode_short_string(encoded: bytes, offset: int) -> tuple[str, int]:
    """pika's `decode_short_string`, always a str: bytes that are not UTF-8 are escaped."""
    value, end = _pika_decode_short_string(encoded, offset)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    return value, end


def end_of(encoded: bytes, offset: int) -> int | None:
    """Where the field at `offset` (its type octet) ends, or None when that is unknown."""
    kind = encoded[offset : offset + 1]
    start = offset + 1
    if kind in _FIXED:
        end = start + _FIXED[kind]
    elif kind in _PREFIXED and start + 4 <= len(encoded):
        end = start + 4 + struct.unpack_from(">I", encoded, start)[0]
    else:
        return None
    return end if end <= len(encoded) else None


def _guarded(kind: bytes, encoded: bytes, offset: int) -> tuple[Any, int]:
    try:
        value, end = _pika_decode_value(encoded, offset)
    except Exception as exc:  # any value pika cannot decode: not a reason to drop the link
        end = end_of(encoded, offset)
        if end is None:
            raise
        marker = _marker(kind, encoded, offset, str(exc) or type(exc).__name__)
        log.warning("a message field could not be decoded; delivered as %s", marker)
        return marker, end
    return value, int(end)


def _marker(kind: bytes, encoded: bytes, offset: int, problem: str) -> str:
    """`<undecodable timestamp 274877906944: year 10680 is out of range>`."""
    name = _NAMES.get(kind, f"field of type {kind!r}")
    if kind == b"T":
        name += f" {struct.unpack_from('>Q', encoded, offset + 1)[0]}"
    return f"<undecodable {name}: {problem}>"
