"""Floats where the schemas hold exact decimals: refused at every edge, the field named.

msgspec decodes a msgpack float into a `Decimal` field without a word (`1.1` arrives as
`Decimal('1.1')`, `0.1 + 0.2` as `Decimal('0.30000000000000004')`), and a Struct built in
Python holds whatever it was given. cajasync encodes every Decimal as a string, so a float
in place of one comes from another encoder or from float arithmetic in a POS: the amount is
already inexact, and nothing downstream can tell. So:

* `decode_op` (schemas/codec.py) and the replica's record decoding look for one only when
  the body holds a float marker byte (`may_hold_float`, a scan in C): a body without one
  holds no float, and the hot path pays that scan and nothing more. A marker byte inside a
  string, a binary or an integer only costs the slow path (`float_problem`: the body
  decoded again without a schema, walked beside the typed result), which finds nothing;
* `record()` and the catalog's puts (Python Structs) ask `python_number_problem` about a
  value the validation's fast pass could not check (schemas/validation.py).

A float in a field the schema does not know (a newer terminal's field) is not ours to judge.
JSON input (`cajasync catalog upsert --json`) is text: msgspec reads `1.1` there into an exact
Decimal, so a JSON number is not refused.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

import msgspec

FLOAT_REASON: Final = "is a float; amounts travel as decimal strings"
_MARKERS: Final = (b"\xca", b"\xcb")  # msgpack float 32 and float 64
_untyped = msgspec.msgpack.Decoder()


def may_hold_float(body: bytes) -> bool:
    """Whether a msgpack body may hold a float; False means it certainly holds none."""
    return _MARKERS[1] in body or _MARKERS[0] in body


def float_problem(body: bytes, typed: object, path: str = "") -> str | None:
    """`<path>: <value> is a float; ...` for the first float in the msgpack `body` where
    `typed` (the same body decoded with its schema) holds a Decimal; None when there is none.
    `path` prefixes the field path (`op.lines[0].unit_price` under an envelope)."""
    if not may_hold_float(body):
        return None
    try:
        raw = _untyped.decode(body)
    except msgspec.DecodeError:
        return None  # the typed decoding succeeded, so this cannot happen; nothing to name
    found = _first_float(raw, typed, path)
    if found is None:
        return None
    where, value = found
    return f"{where.lstrip('.')}: {value!r} {FLOAT_REASON}"


def _first_float(raw: Any, typed: object, path: str) -> tuple[str, float] | None:
    """Walk `raw` (builtins) beside `typed` (Structs), field by field."""
    if isinstance(raw, float):
        return (path, raw) if isinstance(typed, Decimal) else None
    if isinstance(typed, msgspec.Struct) and isinstance(raw, dict):
        names = zip(typed.__struct_fields__, typed.__struct_encode_fields__, strict=True)
        for name, wire_name in names:
            if wire_name in raw:
                inner = _first_float(raw[wire_name], getattr(typed, name), f"{path}.{name}")
                if inner is not None:
                    return inner
    elif isinstance(typed, list | tuple) and isinstance(raw, list | tuple):
        for index, (raw_item, item) in enumerate(zip(raw, typed, strict=False)):
            inner = _first_float(raw_item, item, f"{path}[{index}]")
            if inner is not None:
                return inner
    elif isinstance(typed, dict) and isinstance(raw, dict):
        for key, item in typed.items():
            if key in raw:
                inner = _first_float(raw[key], item, f"{path}[{key!r}]")
                if inner is not None:
                    return inner
    return None


def python_number_problem(value: object) -> str | None:
    """Why a value in a Decimal field of a Struct built in Python is not a Decimal (a float,
    an int...), or None when it is one."""
    if isinstance(value, Decimal):
        return None
    if isinstance(value, float):
        return f"{value!r} {FLOAT_REASON}"
    return f"{value!r} is a {type(value).__name__}, not a Decimal"


def python_float_problem(struct: msgspec.Struct, path: str = "") -> str | None:
    """`<path>: <value> is a float; ...` for the first float held in a Decimal field of
    `struct` or of a Struct inside it (lists and mappings included); None when there is none."""
    found = _first_python_float(struct, path)
    if found is None:
        return None
    where, problem = found
    return f"{where.lstrip('.')}: {problem}"


def _first_python_float(value: object, path: str) -> tuple[str, str] | None:
    if isinstance(value, float):
        return path, f"{value!r} {FLOAT_REASON}"
    if isinstance(value, msgspec.Struct):
        items: Any = ((f"{path}.{name}", getattr(value, name)) for name in value.__struct_fields__)
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    elif isinstance(value, dict):
        items = ((f"{path}[{key!r}]", item) for key, item in value.items())
    else:
        return None
    for where, item in items:
        found = _first_python_float(item, where)
        if found is not None:
            return found
    return None
