"""Checks on exact decimals shared by every edge: amounts of money, rates, quantities.

Each check returns what is wrong with a value, in a few words a person can act on
("NaN is not a finite number", "-5 is negative"), or None when the value is fine, so a
caller can prefix the field it looked at and collect every problem of a record at once.
Nothing here raises on NaN, infinities or huge exponents: finiteness is checked first,
comparisons are exact, and places are counted by quantizing in a context of our own that
traps nothing (so a caller's decimal context never changes a verdict).
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Final

from schemas.limits import MAX_AMOUNT, MONEY_PLACES

MONEY_LIMIT: Final = MAX_AMOUNT  # exclusive: what the server's NUMERIC(16, 2) column holds
QUANTITY_LIMIT: Final = Decimal(10) ** 12  # exclusive: stock and combo quantities
_ZERO: Final = Decimal(0)


def decimal_places(value: Decimal) -> int:
    """Decimal places of a finite value, trailing zeros ignored (`1.50` has 1, `100` has 0)."""
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int), "decimal_places needs a finite value"
    significant = len(digits)
    while exponent < 0 and significant > 1 and digits[significant - 1] == 0:
        significant -= 1
        exponent += 1
    return 0 if exponent >= 0 or digits == (0,) else -exponent


def finite_problem(value: Decimal) -> str | None:
    """Why `value` is not a finite number (NaN, Infinity), or None."""
    return None if value.is_finite() else f"{value} is not a finite number"


def money_problem(value: Decimal, *, signed: bool = False) -> str | None:
    """Why `value` is not an amount of money: not finite, negative (unless `signed`), not
    below MONEY_LIMIT in size, or with more than MONEY_PLACES decimal places; or None."""
    if value.is_finite() and _ZERO <= value < MONEY_LIMIT and _has_places(value, MONEY_PLACES):
        return None  # the usual case, decided in a few comparisons
    problem = finite_problem(value)
    if problem is not None:
        return problem
    if not signed and value < 0:
        return f"{value} is negative"
    if abs(value) >= MONEY_LIMIT:
        return f"{value} is too large (an amount stays below {MONEY_LIMIT:,})"
    if decimal_places(value) > MONEY_PLACES:
        return f"{value} has more than {MONEY_PLACES} decimal places"
    return None


def range_problem(
    value: Decimal, low: Decimal | int, high: Decimal | int, *, places: int
) -> str | None:
    """Why `value` is not a finite number within low..high (inclusive) with at most
    `places` decimal places, or None (rates, percentages, quantities)."""
    if value.is_finite() and low <= value <= high and _has_places(value, places):
        return None  # the usual case
    problem = finite_problem(value)
    if problem is not None:
        return problem
    if not low <= value <= high:
        return f"{value} is not within {low}..{high}"
    if decimal_places(value) > places:
        return f"{value} has more than {places} decimal places"
    return None


_EXACT: Final = Context(prec=64, traps=[])
_QUANTA: Final = {places: Decimal(1).scaleb(-places) for places in range(9)}


def _has_places(value: Decimal, places: int) -> bool:
    """Whether a finite value has at most `places` decimal places (quantizing it to
    `1E-places` leaves it unchanged; an overflow gives NaN, which is unequal)."""
    quantum = _QUANTA.get(places) or Decimal(1).scaleb(-places)
    return value == value.quantize(quantum, context=_EXACT)
