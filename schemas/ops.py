"""Operations a terminal sends up ("Transmitir"): one tagged union, tagged by topic.

Evolution rules (msgspec): a new field always gets a default and goes last; a field's
type never changes; unknown fields are ignored, so an older server or terminal still
decodes a newer payload and vice versa. Amounts are exact decimals, never floats.

Rules the types cannot express live in `schemas/validation.py`, checked by `record()`
before it writes and by the server on arrival: every number is finite; a `Money` value
has at most 2 decimal places and is below 10^14 in absolute value (`schemas/limits.py`);
an encoded operation weighs at most `MAX_OPERATION_BYTES` (1 MiB with its envelope).

A return (goods brought back, money refunded) is a `Sale` with `kind="return"`: its lines
have negative quantities (and discounts), so its net, tax and total are negative, and its
payments are refunds (zero or negative) that add up to its total. A plain sale has
non-negative quantities, discounts, line amounts and payments. Unit prices are never
negative. A Z close's totals may be negative (a day with more returns than sales).
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Final, Literal

import msgspec

from schemas.topics import CASH_PAYMENTS, SALES, WEEKLY_FILES, Z_CLOSES

MONEY: Final = msgspec.Meta(
    description="an amount in the currency: at most 2 decimal places, below 10^14"
)
Money = Annotated[Decimal, MONEY]
"""An amount in the currency (validation checks its places and range; a quantity or a tax
rate is a plain Decimal). The annotation changes nothing on the wire."""
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
CENT = Decimal("0.01")


def cents(value: Decimal) -> Decimal:
    """Round an amount to cents, half up, as fiscal printers do."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


class CardData(msgspec.Struct, frozen=True, kw_only=True):
    """Card details of a card payment (never the full number)."""

    bank: str
    brand: str
    last4: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}\Z")]
    installments: Annotated[int, msgspec.Meta(ge=1)] = 1
    authorization: str = ""


class SalePayment(msgspec.Struct, frozen=True, kw_only=True):
    """One payment of a sale, by payment method."""

    method: Code
    amount: Money
    card: CardData | None = None


class SaleLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a sale ticket: quantity x unit price - discount, plus tax."""

    product: Code
    description: str = ""
    quantity: Decimal
    unit_price: Money
    discount: Money = Decimal(0)
    tax_rate: Decimal

    @property
    def net(self) -> Decimal:
        return cents(self.quantity * self.unit_price - self.discount)

    @property
    def tax(self) -> Decimal:
        return self.tax_of(self.net)

    def tax_of(self, net: Decimal) -> Decimal:
        """The tax of this line, given its `net`."""
        return cents(net * self.tax_rate / 100)


class SaleTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Totals of a sale; `total == net + tax`."""

    net: Money
    tax: Money
    total: Money

    @classmethod
    def of(cls, lines: list[SaleLine]) -> SaleTotals:
        """Compute the totals of a list of lines, the way the server checks them."""
        nets = [line.net for line in lines]  # each line's net once (its tax is of its net)
        net = sum(nets, Decimal(0))
        tax = sum((line.tax_of(n) for line, n in zip(lines, nets, strict=True)), Decimal(0))
        return cls(net=net, tax=tax, total=net + tax)


class Sale(msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=SALES):
    """A sale ticket or invoice ("Ventas"), or a return; voids and corrections are new
    versions. A return has negative quantities and totals, and refunds as its payments."""

    book: Code
    number: Annotated[int, msgspec.Meta(ge=0)]
    date: dt.datetime
    seller: Code
    lines: list[SaleLine]
    payments: list[SalePayment]
    totals: SaleTotals
    customer: str | None = None
    voided: bool = False
    kind: Literal["sale", "return"] = "sale"


class CashPayment(msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=CASH_PAYMENTS):
    """Cash paid out at the till ("Pagos"): a transfer ("pase") or an advance ("adelanto")."""

    kind: Literal["transfer", "advance"]
    payee_kind: Literal["supplier", "employee"]
    payee: Code
    amount: Money
    method: Code
    date: dt.datetime
    note: str = ""


class TaxTotal(msgspec.Struct, frozen=True, kw_only=True):
    rate: Decimal
    net: Money
    tax: Money


class MethodTotal(msgspec.Struct, frozen=True, kw_only=True):
    method: Code
    amount: Money


class ZClose(msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=Z_CLOSES):
    """Fiscal end-of-day close ("Cierre Z")."""

    number: Annotated[int, msgspec.Meta(ge=1)]
    period_start: dt.datetime
    period_end: dt.datetime
    first_receipt: Annotated[int, msgspec.Meta(ge=0)]
    last_receipt: Annotated[int, msgspec.Meta(ge=0)]
    sale_count: Annotated[int, msgspec.Meta(ge=0)]
    totals_by_tax: list[TaxTotal]
    totals_by_method: list[MethodTotal]
    total: Money


class WeeklyFileChunk(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="topic", tag=WEEKLY_FILES
):
    """One chunk of the weekly fiscal file ("Archivo Semanal"); the server reassembles them."""

    week: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-W[0-9]{2}\Z")]
    file_name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
    chunk_index: Annotated[int, msgspec.Meta(ge=0)]
    chunk_count: Annotated[int, msgspec.Meta(ge=1)]
    data: bytes


Operation = Sale | CashPayment | ZClose | WeeklyFileChunk


def topic_of(op: Operation) -> str:
    """The topic slug of an operation (its union tag)."""
    return _tag(type(op))


@functools.cache
def _tag(kind: type[msgspec.Struct]) -> str:
    # msgspec builds a new StructConfig at every `__struct_config__` read (~6 us); ingest
    # asks three times per operation
    tag = kind.__struct_config__.tag
    assert isinstance(tag, str)
    return tag
