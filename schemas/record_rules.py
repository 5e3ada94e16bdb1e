"""What a valid down record is, field by field: the one place every edge asks.

    problems = record_problems(record)   # ["price: NaN is not a finite number", ...]

The catalog refuses a record with problems before it writes anything (outbox/catalog.py,
and so `cajasync catalog upsert`), and a terminal refuses one that arrives anyway (a record
stored before these rules existed, a forged message) without applying it
(inbox/replica.py). The rules live here rather than as msgspec constraints on the Structs:
a constraint fails the decoding of the whole message that carries the record (a change
event of 100, a catch-up of 500), and of every replica row already holding it, where
these rules refuse that one record and say why.

The rules, per kind of field:

* keys and references to other records (`brand`, `family`, `parent`, `product`,
  `bank_card`, `price_list`, barcodes, permissions): not blank, no surrounding spaces, no
  control characters, at most 64 characters;
* names and titles (and a company's tax id, a receipt book's voucher type, a bank and a
  card): not blank, no control characters, at most 200 characters;
* money (prices, credit limits): finite, not negative, below 10^14, at most 2 places;
* tax rates 0..100, commissions 0..100, surcharges -100..100 (a negative surcharge is a
  discount), each with at most 4 places;
* stock quantities finite and below 10^12 in size (stock may go negative), a minimum
  not negative; combo items' quantities above zero; a combo has items;
* validity periods: start not after end, both with or both without a time zone;
* counts: installments 1..99, a receipt book's next number at least 1, seats 0..10,000;
* an e-mail address, when given, has one `@` and no spaces; a certificate is PEM text;
  a record is not its own parent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from schemas.money import QUANTITY_LIMIT, finite_problem, money_problem, range_problem
from schemas.records import (
    Account,
    BankCard,
    Brand,
    Certificate,
    Combo,
    Company,
    Customer,
    Family,
    News,
    Offer,
    PaymentMethod,
    Permission,
    Product,
    ReceiptBook,
    Record,
    Report,
    Seller,
    StockLevel,
    Supplier,
    Table,
    Tax,
    User,
)

KEY_LENGTH: Final = 64
NAME_LENGTH: Final = 200
RATE_PLACES: Final = 4
MAX_INSTALLMENTS: Final = 99
MAX_SEATS: Final = 10_000

# What a valid key or name looks like, matched in one go (the reason is worked out only for
# a value that does not match): a bootstrap checks every field of 100,000 records.
_CONTROL = r"\x00-\x1f\x7f"
_KEY = re.compile(rf"[^\s{_CONTROL}](?:[^{_CONTROL}]{{0,{KEY_LENGTH - 2}}}[^\s{_CONTROL}])?")
_NAME = re.compile(rf"(?=[^{_CONTROL}]*?\S)[^{_CONTROL}]{{1,{NAME_LENGTH}}}")
_HAS_CONTROL = re.compile(rf"[{_CONTROL}]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

Problems = list[str]  # "field: what is wrong with it", in field order


def record_problems(record: Record) -> list[str]:
    """Every rule `record` breaks, as `field: what is wrong` (empty when it is valid)."""
    out: Problems = []
    _reference(out, "key", record.key)
    rules = _RULES.get(type(record))
    if rules is not None:
        rules(out, record)
    return out


def record_problem(record: Record) -> str | None:
    """The problems of `record` on one line, or None when it is valid."""
    problems = record_problems(record)
    return "; ".join(problems) if problems else None


# -- kinds of field ---------------------------------------------------------------------------


def _reference(out: Problems, path: str, value: str | None, at: object = None) -> None:
    """A key, or a reference to another record's key (None: no reference); `at` is the
    index in a list (or the name in a mapping) where the value was found."""
    if value is None or _KEY.fullmatch(value):
        return
    path = path if at is None else f"{path}[{at!r}]"
    if not value.strip():
        out.append(f"{path}: is blank")
    elif value != value.strip():
        out.append(f"{path}: {value!r} has spaces around it")
    elif _HAS_CONTROL.search(value):
        out.append(f"{path}: {value!r} holds control characters")
    else:
        out.append(f"{path}: is longer than {KEY_LENGTH} characters")


def _name(out: Problems, path: str, value: str) -> None:
    """A name a person reads on a screen or a ticket."""
    if _NAME.fullmatch(value):
        return
    if not value.strip():
        out.append(f"{path}: is blank")
    elif _HAS_CONTROL.search(value):
        out.append(f"{path}: {value!r} holds control characters")
    else:
        out.append(f"{path}: is longer than {NAME_LENGTH} characters")


def _email(out: Problems, path: str, value: str) -> None:
    if value and not _EMAIL.fullmatch(value):
        out.append(f"{path}: {value!r} is not an e-mail address")


def _check(out: Problems, path: str, problem: str | None) -> None:
    if problem is not None:
        out.append(f"{path}: {problem}")


def _money(out: Problems, path: str, value: Decimal, at: object = None) -> None:
    problem = money_problem(value)
    if problem is not None:
        out.append(f"{path if at is None else f'{path}[{at!r}]'}: {problem}")


def _percent(out: Problems, path: str, value: Decimal, low: int = 0) -> None:
    """Tax rates and commissions 0..100; surcharges -100..100 (a negative one: a discount)."""
    _check(out, path, range_problem(value, low, 100, places=RATE_PLACES))


def _quantity(out: Problems, path: str, value: Decimal, *, low: int | None = None) -> None:
    """A finite quantity below QUANTITY_LIMIT in size; with `low`, not below it."""
    problem = finite_problem(value)
    if problem is None and abs(value) >= QUANTITY_LIMIT:
        problem = f"{value} is too large (a quantity stays below {QUANTITY_LIMIT:,})"
    if problem is None and low is not None and value < low:
        problem = f"{value} is below {low}"
    _check(out, path, problem)


def _count(out: Problems, path: str, value: int, low: int, high: int | None = None) -> None:
    if value < low:
        out.append(f"{path}: {value} is below {low}")
    elif high is not None and value > high:
        out.append(f"{path}: {value} is above {high}")


def _period(out: Problems, start: dt.datetime, end: dt.datetime) -> None:
    if (start.tzinfo is None) != (end.tzinfo is None):
        out.append("valid_from: one end of the period has a time zone and the other has not")
    elif start > end:
        out.append(f"valid_to: {end.isoformat()} is before valid_from {start.isoformat()}")


def _parent(out: Problems, key: str, parent: str | None) -> None:
    _reference(out, "parent", parent)
    if parent == key:
        out.append("parent: a record cannot be its own parent")


# -- kinds of record ------------------------------------------------------------------------


def _named(out: Problems, r: Brand | Permission | Supplier) -> None:
    """Kinds whose only rule beyond the key is their name."""
    _name(out, "name", r.name)


def _company(out: Problems, r: Company) -> None:
    _name(out, "name", r.name)
    _name(out, "tax_id", r.tax_id)
    _email(out, "email", r.email)


def _user(out: Problems, r: User) -> None:
    _name(out, "name", r.name)
    for index, permission in enumerate(r.permissions):
        _reference(out, "permissions", permission, index)


def _tax(out: Problems, r: Tax) -> None:
    _name(out, "name", r.name)
    _percent(out, "rate", r.rate)


def _certificate(out: Problems, r: Certificate) -> None:
    _name(out, "name", r.name)
    _name(out, "subject", r.subject)
    _period(out, r.valid_from, r.valid_to)
    if "-----BEGIN " not in r.pem:
        out.append("pem: is not PEM text (no -----BEGIN line)")


def _family(out: Problems, r: Family) -> None:
    _name(out, "name", r.name)
    _parent(out, r.key, r.parent)


def _report(out: Problems, r: Report) -> None:
    _name(out, "name", r.name)
    if not r.template.strip():
        out.append("template: is blank")


def _product(out: Problems, r: Product) -> None:
    _name(out, "name", r.name)
    for index, barcode in enumerate(r.barcodes):
        _reference(out, "barcodes", barcode, index)
    _reference(out, "brand", r.brand)
    _reference(out, "family", r.family)
    _money(out, "price", r.price)
    for name, price in r.prices.items():
        _reference(out, "prices", name, name)  # a price list's name is a key
        _money(out, "prices", price, name)
    _percent(out, "tax_rate", r.tax_rate)


def _customer(out: Problems, r: Customer) -> None:
    _name(out, "name", r.name)
    _email(out, "email", r.email)
    _money(out, "credit_limit", r.credit_limit)
    _reference(out, "price_list", r.price_list)


def _account(out: Problems, r: Account) -> None:
    _name(out, "name", r.name)
    _parent(out, r.key, r.parent)


def _payment_method(out: Problems, r: PaymentMethod) -> None:
    _name(out, "name", r.name)
    _reference(out, "bank_card", r.bank_card)
    _percent(out, "surcharge_pct", r.surcharge_pct, low=-100)


def _bank_card(out: Problems, r: BankCard) -> None:
    _name(out, "bank", r.bank)
    _name(out, "card", r.card)
    _count(out, "max_installments", r.max_installments, 1, MAX_INSTALLMENTS)
    _percent(out, "surcharge_pct", r.surcharge_pct, low=-100)


def _receipt_book(out: Problems, r: ReceiptBook) -> None:
    _name(out, "name", r.name)
    _name(out, "voucher_type", r.voucher_type)
    _count(out, "next_number", r.next_number, 1)


def _seller(out: Problems, r: Seller) -> None:
    _name(out, "name", r.name)
    _percent(out, "commission_pct", r.commission_pct)


def _stock_level(out: Problems, r: StockLevel) -> None:
    _reference(out, "product", r.product)
    _quantity(out, "quantity", r.quantity)  # stock may go negative
    _quantity(out, "minimum", r.minimum, low=0)


def _combo(out: Problems, r: Combo) -> None:
    _name(out, "name", r.name)
    _money(out, "price", r.price)
    if not r.items:
        out.append("items: a combo needs at least one item")
    for index, item in enumerate(r.items):
        _reference(out, f"items[{index}].product", item.product)
        _quantity(out, f"items[{index}].quantity", item.quantity)
        if item.quantity.is_finite() and item.quantity <= 0:
            out.append(f"items[{index}].quantity: {item.quantity} is not above zero")


def _offer(out: Problems, r: Offer) -> None:
    _reference(out, "product", r.product)
    _money(out, "price", r.price)
    _period(out, r.valid_from, r.valid_to)


def _news(out: Problems, r: News) -> None:
    _name(out, "title", r.title)
    _period(out, r.valid_from, r.valid_to)


def _table(out: Problems, r: Table) -> None:
    _name(out, "name", r.name)
    _count(out, "seats", r.seats, 0, MAX_SEATS)


# Setting: any value (an empty one is a setting too); its key is its only rule.
_RULES: Final[dict[type, Callable[[Problems, Any], None]]] = {
    Company: _company,
    User: _user,
    Permission: _named,
    Tax: _tax,
    Certificate: _certificate,
    Brand: _named,
    Family: _family,
    Report: _report,
    Product: _product,
    Customer: _customer,
    Account: _account,
    PaymentMethod: _payment_method,
    BankCard: _bank_card,
    Supplier: _named,
    ReceiptBook: _receipt_book,
    Seller: _seller,
    StockLevel: _stock_level,
    Combo: _combo,
    Offer: _offer,
    News: _news,
    Table: _table,
}
