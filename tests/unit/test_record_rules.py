"""What a valid down record is: one test per rule, each naming the field it refuses."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from schemas.money import MONEY_LIMIT, decimal_places, money_problem, range_problem
from schemas.record_rules import _RULES, record_problem, record_problems
from schemas.records import (
    RECORD_TYPES,
    Account,
    BankCard,
    Brand,
    Certificate,
    Combo,
    ComboItem,
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
    Setting,
    StockLevel,
    Supplier,
    Table,
    Tax,
    User,
)

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=7)
HASH = "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaA"

# One valid record of every kind (what the seed writes, in short).
VALID: list[Record] = [
    Company(key="company", name="Del Plata S.R.L.", tax_id="30-71234567-9", email="a@b.example"),
    User(key="ana", name="Ana Pérez", role="CASHIER", password_hash=HASH, permissions=["sell"]),
    Permission(key="sales.sell", name="Sell", roles=["CASHIER"]),
    Tax(key="iva-10.5", name="IVA 10,5%", rate=Decimal("10.5")),
    Certificate(
        key="afip",
        name="Factura electrónica",
        subject="CN=pos",
        valid_from=NOW,
        valid_to=LATER,
        pem="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ),
    Brand(key="la-serenisima", name="La Serenísima"),
    Family(key="lacteos", name="Lácteos", parent="almacen"),
    Report(key="ticket", name="Ticket", template="{lines}"),
    Setting(key="ticket-footer", value=""),
    Product(
        key="7790001000011",
        name="Yerba 1kg",
        barcodes=["7790001000011"],
        brand="la-serenisima",
        price=Decimal("3150.00"),
        prices={"mayorista": Decimal("2677.5")},
        tax_rate=Decimal(21),
    ),
    Customer(key="C1", name="Ana", email="", credit_limit=Decimal(50_000), price_list="mayorista"),
    Account(key="1.1", name="Caja", kind="asset", parent="1"),
    PaymentMethod(key="PV1/cash", name="Efectivo", kind="cash", surcharge_pct=Decimal(-10)),
    BankCard(key="visa", bank="Galicia", card="Visa", max_installments=12),
    Supplier(key="PR001", name="Distribuidora Norte", kind="goods"),
    ReceiptBook(key="PV1/FA", name="Factura A", voucher_type="factura", letter="A"),
    Seller(key="V01", name="Ana", commission_pct=Decimal("2.5")),
    StockLevel(key="L1/1", product="1", quantity=Decimal(-3), minimum=Decimal(5)),
    Combo(
        key="CB1",
        name="Combo",
        price=Decimal(10),
        items=[ComboItem(product="1", quantity=Decimal(1))],
    ),
    Offer(key="OF1", product="1", price=Decimal("9.99"), valid_from=NOW, valid_to=NOW),
    News(key="N1", title="Ofertas", text="", valid_from=NOW, valid_to=LATER),
    Table(key="M01", name="Mesa 1", seats=4),
]
BY_KIND: dict[type[Any], Record] = {type(record): record for record in VALID}


def problems(kind: type[Any], **changes: Any) -> list[str]:
    """The problems of the valid record of `kind` with `changes` made to it."""
    return record_problems(replace(BY_KIND[kind], **changes))


def test_every_kind_of_record_has_a_valid_example_and_rules_of_its_own() -> None:
    assert set(BY_KIND) == set(RECORD_TYPES)
    assert set(RECORD_TYPES) - set(_RULES) == {Setting}  # a setting's value may be anything


@pytest.mark.parametrize("record", VALID, ids=lambda r: type(r).__name__)
def test_a_valid_record_has_no_problems(record: Record) -> None:
    assert record_problems(record) == []
    assert record_problem(record) is None


# -- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("NaN", "price: NaN is not a finite number"),
        ("-Infinity", "price: -Infinity is not a finite number"),
        ("-5", "price: -5 is negative"),
        ("1.999", "price: 1.999 has more than 2 decimal places"),
        ("1E+14", "price: 1E+14 is too large"),
    ],
)
def test_a_product_price_is_a_finite_non_negative_amount_in_cents(price: str, reason: str) -> None:
    (found,) = problems(Product, price=Decimal(price))
    assert found.startswith(reason)


def test_other_price_lists_follow_the_same_rule_and_name_the_list() -> None:
    assert problems(Product, prices={"mayorista": Decimal("NaN")}) == [
        "prices['mayorista']: NaN is not a finite number"
    ]
    assert problems(Product, prices={" ": Decimal(1)}) == ["prices[' ']: is blank"]


@pytest.mark.parametrize(
    ("kind", "field"),
    [(Combo, "price"), (Offer, "price"), (Customer, "credit_limit")],
)
def test_every_amount_of_money_is_checked(kind: type[Any], field: str) -> None:
    assert problems(kind, **{field: Decimal(-1)}) == [f"{field}: -1 is negative"]


def test_an_amount_with_trailing_zeros_has_only_its_significant_places() -> None:
    assert problems(Product, price=Decimal("10.5000")) == []
    assert decimal_places(Decimal("1.50")) == 1
    assert decimal_places(Decimal("1E+2")) == 0
    assert decimal_places(Decimal("0E-9")) == 0


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_the_money_check_never_raises_whatever_the_decimal(value: Decimal) -> None:
    problem = money_problem(value)
    if problem is None:
        assert value.is_finite()
        assert 0 <= value < MONEY_LIMIT
        assert value == round(value, 2)


@given(st.integers(min_value=0, max_value=10**16 - 1))
def test_every_amount_in_cents_below_the_limit_is_money(cents: int) -> None:
    assert money_problem(Decimal(cents) / 100) is None


# -- rates and percentages -----------------------------------------------------------------


@pytest.mark.parametrize("rate", ["250", "-1", "NaN", "21.00001"])
def test_a_tax_rate_is_within_0_and_100_with_at_most_4_places(rate: str) -> None:
    (product,) = problems(Product, tax_rate=Decimal(rate))
    (tax,) = problems(Tax, rate=Decimal(rate))
    assert product.startswith(f"tax_rate: {rate} ")
    assert tax.startswith(f"rate: {rate} ")


def test_a_surcharge_may_be_a_discount_but_not_beyond_100_percent() -> None:
    assert problems(PaymentMethod, surcharge_pct=Decimal(-100)) == []
    assert problems(PaymentMethod, surcharge_pct=Decimal(-101)) == [
        "surcharge_pct: -101 is not within -100..100"
    ]
    assert problems(BankCard, surcharge_pct=Decimal(150)) == [
        "surcharge_pct: 150 is not within -100..100"
    ]


def test_a_commission_is_within_0_and_100() -> None:
    assert problems(Seller, commission_pct=Decimal(-1)) == [
        "commission_pct: -1 is not within 0..100"
    ]
    assert range_problem(Decimal(100), 0, 100, places=4) is None


# -- keys, references and names ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("   ", "key: is blank"),
        (" 779", "key: ' 779' has spaces around it"),
        ("779\n", "key: '779\\n' has spaces around it"),
        ("7\x0079", "key: '7\\x0079' holds control characters"),
    ],
)
def test_a_key_is_not_blank_nor_padded_nor_holding_control_characters(
    key: str, reason: str
) -> None:
    assert problems(Product, key=key) == [reason]


def test_references_to_other_records_follow_the_key_rule() -> None:
    assert problems(Product, brand="") == ["brand: is blank"]
    assert problems(Product, barcodes=["779", " "]) == ["barcodes[1]: is blank"]
    assert problems(StockLevel, product=" 1") == ["product: ' 1' has spaces around it"]
    assert problems(User, permissions=["x" * 65]) == [
        "permissions[0]: is longer than 64 characters"
    ]


@pytest.mark.parametrize("kind", [k for k in BY_KIND if "name" in k.__struct_fields__])
def test_every_name_is_not_blank(kind: type[Any]) -> None:
    assert problems(kind, name=" \t") == ["name: is blank"]


def test_a_name_holds_no_control_characters_and_fits_a_ticket() -> None:
    assert problems(Product, name="Yerba\x1b[2J") == [
        "name: 'Yerba\\x1b[2J' holds control characters"
    ]
    assert problems(Product, name="Y" * 201) == ["name: is longer than 200 characters"]


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        (News, "title"),
        (Company, "tax_id"),
        (BankCard, "bank"),
        (BankCard, "card"),
        (ReceiptBook, "voucher_type"),
        (Certificate, "subject"),
        (Report, "template"),
    ],
)
def test_other_texts_a_till_relies_on_are_not_blank(kind: type[Any], field: str) -> None:
    assert problems(kind, **{field: ""}) == [f"{field}: is blank"]


def test_an_email_when_given_looks_like_one() -> None:
    assert problems(Customer, email="ana at example") == [
        "email: 'ana at example' is not an e-mail address"
    ]
    assert problems(Company, email="") == []


def test_a_family_or_account_is_not_its_own_parent() -> None:
    assert problems(Family, parent="lacteos") == ["parent: a record cannot be its own parent"]
    assert problems(Account, parent="1.1") == ["parent: a record cannot be its own parent"]


# -- quantities, counts and periods --------------------------------------------------------


def test_a_stock_quantity_is_finite_and_may_be_negative_but_its_minimum_may_not() -> None:
    assert problems(StockLevel, quantity=Decimal("NaN")) == ["quantity: NaN is not a finite number"]
    assert problems(StockLevel, quantity=Decimal("1E+12"))[0].startswith("quantity: 1E+12 is too")
    assert problems(StockLevel, minimum=Decimal(-1)) == ["minimum: -1 is below 0"]


def test_a_combo_has_items_each_with_a_quantity_above_zero() -> None:
    assert problems(Combo, items=[]) == ["items: a combo needs at least one item"]
    zero = ComboItem(product="1", quantity=Decimal(0))
    assert problems(Combo, items=[zero]) == ["items[0].quantity: 0 is not above zero"]
    nan = ComboItem(product="1", quantity=Decimal("NaN"))
    assert problems(Combo, items=[nan]) == ["items[0].quantity: NaN is not a finite number"]


def test_counts_stay_in_their_range() -> None:
    assert problems(BankCard, max_installments=0) == ["max_installments: 0 is below 1"]
    assert problems(BankCard, max_installments=100) == ["max_installments: 100 is above 99"]
    assert problems(ReceiptBook, next_number=0) == ["next_number: 0 is below 1"]
    assert problems(Table, seats=-1) == ["seats: -1 is below 0"]


@pytest.mark.parametrize("kind", [Offer, News, Certificate])
def test_a_validity_period_does_not_end_before_it_starts(kind: type[Any]) -> None:
    (found,) = problems(kind, valid_from=LATER, valid_to=NOW)
    assert found.startswith("valid_to: 2026-03-02T12:30:00+00:00 is before valid_from")


def test_a_validity_period_does_not_mix_times_with_and_without_a_zone() -> None:
    assert problems(Offer, valid_to=NOW.replace(tzinfo=None)) == [
        "valid_from: one end of the period has a time zone and the other has not"
    ]


def test_a_certificate_is_pem_text() -> None:
    assert problems(Certificate, pem="MIIB...") == ["pem: is not PEM text (no -----BEGIN line)"]


def test_every_problem_of_a_record_is_listed_on_one_line() -> None:
    bad = replace(BY_KIND[Product], name="", price=Decimal("NaN"), tax_rate=Decimal(250))
    assert record_problem(bad) == (
        "name: is blank; price: NaN is not a finite number; tax_rate: 250 is not within 0..100"
    )
