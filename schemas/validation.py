"""Business checks the types cannot express; a failure rejects the operation with a reason.

One set of rules for every edge: `outbox.record` checks an operation before it writes
anything (`validate_operation`, `check_size`), and the server checks every operation it
decodes (`validate`), so a till learns at the till what the server would reject.
"""

from __future__ import annotations

import functools
import hashlib
import types
import typing
from collections.abc import Iterator
from decimal import Context, Decimal, DecimalException

import msgspec

from cajasync.errors import InvalidMessage
from schemas.codec import encode
from schemas.envelope import OpEnvelope
from schemas.floats import python_number_problem
from schemas.limits import MAX_AMOUNT, MAX_INT, MAX_OPERATION_BYTES, MAX_SIZE, MONEY_PLACES
from schemas.money import finite_problem, money_problem
from schemas.ops import (
    CashPayment,
    Money,
    Operation,
    Sale,
    SaleLine,
    SaleTotals,
    WeeklyFileChunk,
    ZClose,
)


def validate(envelope: OpEnvelope) -> None:
    """Raise InvalidMessage naming the envelope and the first rule its operation breaks."""
    where = f"terminal {envelope.terminal} seq {envelope.seq} op {envelope.op_id}"
    try:
        check_envelope(envelope)
        validate_operation(envelope.op)
    except InvalidMessage as exc:
        raise InvalidMessage(f"{where}: {exc.reason}") from exc


def validate_operation(op: Operation) -> None:
    """Raise InvalidMessage naming the first rule `op` breaks (and its field), if any."""
    subject = describe(op)
    if not _numbers_ok(op):  # the fast pass found a bad number: name it (the slow pass)
        for path, value in _non_decimals(op, ""):
            problem = python_number_problem(value)
            raise InvalidMessage(f"{subject} {path.lstrip('.')}: {problem}")
        for path, value, money in _decimals(op, "", money=False):
            _check_number(f"{subject} {path.lstrip('.')}", value, money=money)
    try:
        _check_operation(op, subject)
    except DecimalException as exc:  # finite, but beyond what the decimal context computes
        raise InvalidMessage(f"{subject}: an amount is too large to compute with") from exc


def check_envelope(envelope: OpEnvelope) -> None:
    """Raise InvalidMessage when the seq or version does not fit the server's columns."""
    problem = envelope_problem(envelope)
    if problem is not None:
        raise InvalidMessage(problem)


def envelope_problem(envelope: OpEnvelope) -> str | None:
    """Why the seq or version does not fit the server's 32-bit columns, or None."""
    for name, value in (("seq", envelope.seq), ("version", envelope.version)):
        if value > MAX_INT:
            return f"{name} {value} exceeds {MAX_INT}, the largest the server stores"
    return None


def check_size(op: Operation) -> None:
    """Raise InvalidMessage when `op` is too large to travel (`schemas.limits`)."""
    size = len(encode(op))
    if size > MAX_OPERATION_BYTES:
        raise InvalidMessage(
            f"{describe(op)} is {size:,} bytes encoded, over the limit of "
            f"{MAX_OPERATION_BYTES:,} bytes per operation; split it"
        )


def describe(op: Operation) -> str:
    """How a reason names an operation: `sale 0003-A-1201`, `cash payment`, `Z close 4`."""
    match op:
        case Sale() as sale:
            return f"{sale.kind} {sale.book}-{sale.number}"
        case CashPayment():
            return "cash payment"
        case ZClose() as close:
            return f"Z close {close.number}"
        case WeeklyFileChunk() as chunk:
            return f"weekly file {chunk.file_name!r} chunk {chunk.chunk_index}"


def _check_number(name: str, value: Decimal, *, money: bool) -> None:
    """The rules every record edge shares (schemas/money.py); signs are the operation's."""
    problem = money_problem(value, signed=True) if money else finite_problem(value)
    if problem is not None:
        raise InvalidMessage(f"{name} {problem}")


def _decimals(value: object, path: str, *, money: bool) -> Iterator[tuple[str, Decimal, bool]]:
    """Every Decimal inside a Struct: its path (`lines[0].unit_price`), and whether Money."""
    if isinstance(value, Decimal):
        yield path, value, money
    elif isinstance(value, msgspec.Struct):
        amounts = _money_fields(type(value))
        for name in value.__struct_fields__:
            yield from _decimals(getattr(value, name), f"{path}.{name}", money=name in amounts)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _decimals(item, f"{path}[{index}]", money=money)


# The fast pass: the write path checks every number of every sale, so it walks a plan made
# once per Struct type from its type hints (no path strings, no generators) and leaves the
# naming of a bad number to `_decimals`. Both apply exactly the rules of `_check_number`.
_SKIP, _MONEY, _DECIMAL, _STRUCT, _STRUCTS, _OTHER = range(6)
_EXACT = Context(prec=64, traps=[])
_CENT = Decimal(1).scaleb(-MONEY_PLACES)


def _numbers_ok(struct: msgspec.Struct) -> bool:
    """Whether every Decimal inside `struct` passes `_check_number` (False when a Decimal
    field holds something else: a float or an int given in Python)."""
    try:
        return _planned_numbers_ok(struct)
    except (AttributeError, TypeError):  # not a Decimal: `_non_decimals` names it
        return False


def _non_decimals(struct: msgspec.Struct, path: str) -> Iterator[tuple[str, object]]:
    """Every value of a Decimal field inside `struct` that is not a Decimal, with its path."""
    for name, kind in _plan(type(struct)):
        value = getattr(struct, name)
        if kind in (_MONEY, _DECIMAL) and not isinstance(value, Decimal):
            yield f"{path}.{name}", value
        elif kind == _STRUCT and isinstance(value, msgspec.Struct):
            yield from _non_decimals(value, f"{path}.{name}")
        elif kind == _STRUCTS and isinstance(value, list):
            for index, item in enumerate(value):
                yield from _non_decimals(item, f"{path}.{name}[{index}]")


def _planned_numbers_ok(struct: msgspec.Struct) -> bool:
    for name, kind in _plan(type(struct)):
        value = getattr(struct, name)
        if kind == _MONEY:
            if not (
                value.is_finite()
                and -MAX_AMOUNT < value < MAX_AMOUNT
                and value == value.quantize(_CENT, context=_EXACT)
            ):
                return False
        elif kind == _DECIMAL:
            if not value.is_finite():
                return False
        elif kind == _STRUCT:
            if value is not None and not _planned_numbers_ok(value):
                return False
        elif kind == _STRUCTS:
            if not all(_planned_numbers_ok(item) for item in value):
                return False
        elif any(True for _ in _decimals(value, "", money=False)):  # a shape not planned
            return False
    return True


@functools.cache
def _plan(struct: type[msgspec.Struct]) -> tuple[tuple[str, int], ...]:
    """The fields of `struct` that hold numbers, each with how to check it."""
    hints = typing.get_type_hints(struct, include_extras=True)
    kinds = ((name, _kind(hints[name])) for name in struct.__struct_fields__)
    return tuple((name, kind) for name, kind in kinds if kind != _SKIP)


def _kind(hint: object) -> int:
    if hint is Money:
        return _MONEY
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if hint is Decimal:
        return _DECIMAL
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        inner = _kind(args[0])
        return {_SKIP: _SKIP, _STRUCT: _STRUCTS}.get(inner, _OTHER)
    if origin in (typing.Union, types.UnionType):
        kinds = {_kind(arg) for arg in args if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 and kinds <= {_SKIP, _STRUCT} else _OTHER
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return _STRUCT if _plan(hint) else _SKIP
    return _SKIP  # str, int, bool, bytes, datetime, Literal: no Decimal inside


@functools.cache
def _money_fields(struct: type[msgspec.Struct]) -> frozenset[str]:
    """The fields of `struct` typed `Money`."""
    hints = typing.get_type_hints(struct, include_extras=True)
    return frozenset(name for name, hint in hints.items() if hint is Money)


def _check_operation(op: Operation, subject: str) -> None:
    match op:
        case Sale() as sale:
            _check_sale(sale, subject)
        case CashPayment() as payment:
            if payment.amount <= 0:
                raise InvalidMessage("cash payment amount must be positive")
        case ZClose() as close:
            if close.first_receipt > close.last_receipt:
                raise InvalidMessage("Z close first receipt after last receipt")
            if (close.period_start.tzinfo is None) != (close.period_end.tzinfo is None):
                raise InvalidMessage("Z close period mixes times with and without zone")
            if close.period_start > close.period_end:
                raise InvalidMessage("Z close period ends before it starts")
        case WeeklyFileChunk() as chunk:
            _check_chunk(chunk, subject)


def _check_sale(sale: Sale, name: str) -> None:
    """A sale's amounts are all >= 0, a return's all <= 0 (unit prices are never negative)."""
    if not sale.lines:
        raise InvalidMessage(f"{name} has no lines")
    sign = 1 if sale.kind == "sale" else -1
    for index, line in enumerate(sale.lines):
        _check_line(line, f"{name} lines[{index}]", sign)
    expected = SaleTotals.of(sale.lines)
    if sale.totals != expected:
        raise InvalidMessage(
            f"{name} totals {sale.totals.total} do not match its lines ({expected.total})"
        )
    for index, payment in enumerate(sale.payments):
        if payment.amount * sign < 0:
            raise InvalidMessage(
                f"{name} payments[{index}].amount {payment.amount} "
                + ("is negative: a refund belongs to a return" if sign > 0 else "is positive")
            )
    paid = sum((p.amount for p in sale.payments), start=expected.total * 0)
    if sale.voided:
        return
    if sign > 0 and paid < expected.total:
        raise InvalidMessage(f"{name} paid {paid} of {expected.total}")
    if sign < 0 and paid != expected.total:
        raise InvalidMessage(f"{name} refunded {-paid} of {-expected.total}")


def _check_line(line: SaleLine, name: str, sign: int) -> None:
    if not 0 <= line.tax_rate <= 100:
        raise InvalidMessage(f"{name} tax rate {line.tax_rate} of {line.product} not in 0..100")
    if line.unit_price < 0:
        raise InvalidMessage(f"{name} unit_price {line.unit_price} is negative")
    if sign > 0 and line.quantity < 0:
        raise InvalidMessage(
            f"{name} quantity {line.quantity} is negative: record a return (kind='return')"
        )
    if sign < 0 and line.quantity > 0:
        raise InvalidMessage(f"{name} quantity {line.quantity} is positive in a return")
    if line.discount * sign < 0:
        raise InvalidMessage(f"{name} discount {line.discount} has the sign opposite its quantity")
    if line.net * sign < 0:
        raise InvalidMessage(f"{name} discount {line.discount} is more than the line's amount")


def _check_chunk(chunk: WeeklyFileChunk, name: str) -> None:
    if chunk.chunk_index >= chunk.chunk_count:
        raise InvalidMessage(f"chunk {chunk.chunk_index} of a {chunk.chunk_count}-chunk file")
    problem = chunk_problem(chunk)
    if problem is not None:
        raise InvalidMessage(f"{name}: {problem}")


def chunk_problem(chunk: WeeklyFileChunk) -> str | None:
    """Why a weekly file chunk does not fit the server's columns (its chunk count, its size,
    a NUL in its file name), or None."""
    if chunk.chunk_count > MAX_INT or chunk.size > MAX_SIZE:
        return f"chunk count {chunk.chunk_count} / size {chunk.size} too large"
    if "\x00" in chunk.file_name:
        return "file name contains a NUL character"
    return None


def file_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
