"""Records the server sends down ("Obtener datos"): one Struct per kind, one tagged union.

Every record has a `key` (unique within its topic and scope) and a `version` the server
assigns on every change (a version sent by a client is ignored). The JSON shape of a
record is what `cajasync replica show` prints and what `cajasync catalog upsert` reads.
Evolution rules are those of schemas/ops.py: new fields get defaults, types never change.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

import msgspec

Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
PasswordHash = Annotated[str, msgspec.Meta(pattern=r"^(\$scrypt\$|\$argon2(id|i|d)\$)")]
Role = Literal["MASTER", "ADMIN", "SUPERVISOR", "CASHIER"]


class _Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every record: its key and the version the server gave it."""

    topic: ClassVar[str]
    key: Key
    version: int = 0


# -- configuracion: company, users, permissions, taxes, certificates, brands, families,
#    reports, settings (several kinds share the topic; the tag tells them apart)


class Company(_Record, frozen=True, kw_only=True, tag="configuracion/company"):
    topic = "configuracion"
    name: str
    tax_id: str
    address: str = ""
    phone: str = ""
    email: str = ""


class User(_Record, frozen=True, kw_only=True, tag="configuracion/user"):
    """A POS user; the password only ever travels as an scrypt or argon2 hash."""

    topic = "configuracion"
    name: str
    role: Role
    password_hash: PasswordHash
    permissions: list[str] = []
    active: bool = True


class Permission(_Record, frozen=True, kw_only=True, tag="configuracion/permission"):
    topic = "configuracion"
    name: str
    description: str = ""
    roles: list[Role] = []


class Tax(_Record, frozen=True, kw_only=True, tag="configuracion/tax"):
    topic = "configuracion"
    name: str
    rate: Decimal


class Certificate(_Record, frozen=True, kw_only=True, tag="configuracion/certificate"):
    """An e-invoicing certificate (public part; private keys never leave the server)."""

    topic = "configuracion"
    name: str
    subject: str
    valid_from: dt.datetime
    valid_to: dt.datetime
    pem: str


class Brand(_Record, frozen=True, kw_only=True, tag="configuracion/brand"):
    topic = "configuracion"
    name: str


class Family(_Record, frozen=True, kw_only=True, tag="configuracion/family"):
    topic = "configuracion"
    name: str
    parent: str | None = None


class Report(_Record, frozen=True, kw_only=True, tag="configuracion/report"):
    topic = "configuracion"
    name: str
    template: str


class Setting(_Record, frozen=True, kw_only=True, tag="configuracion/setting"):
    topic = "configuracion"
    value: str


# -- catalogue and parties


class Product(_Record, frozen=True, kw_only=True, tag="productos"):
    topic = "productos"
    name: str
    barcodes: list[str] = []
    brand: str | None = None
    family: str | None = None
    price: Decimal
    prices: dict[str, Decimal] = {}  # other price lists by name
    tax_rate: Decimal
    active: bool = True
    image: Sha256 | None = None  # content address of the product image


class Customer(_Record, frozen=True, kw_only=True, tag="clientes"):
    topic = "clientes"
    name: str
    tax_id: str = ""
    address: str = ""
    email: str = ""
    phone: str = ""
    credit_limit: Decimal = Decimal(0)
    price_list: str | None = None


class Account(_Record, frozen=True, kw_only=True, tag="plan-de-cuentas"):
    topic = "plan-de-cuentas"
    name: str
    kind: Literal["asset", "liability", "equity", "income", "expense"]
    parent: str | None = None


class PaymentMethod(_Record, frozen=True, kw_only=True, tag="formas-de-pago"):
    topic = "formas-de-pago"
    name: str
    kind: Literal["cash", "card", "debit", "transfer", "voucher", "account"]
    bank_card: str | None = None
    surcharge_pct: Decimal = Decimal(0)
    active: bool = True


class BankCard(_Record, frozen=True, kw_only=True, tag="bancos-tarjetas"):
    topic = "bancos-tarjetas"
    bank: str
    card: str
    max_installments: int = 1
    surcharge_pct: Decimal = Decimal(0)


class Supplier(_Record, frozen=True, kw_only=True, tag="proveedores"):
    topic = "proveedores"
    name: str
    kind: Literal["goods", "expenses", "employee"]
    tax_id: str = ""


class ReceiptBook(_Record, frozen=True, kw_only=True, tag="talonarios"):
    topic = "talonarios"
    name: str
    voucher_type: str
    letter: str = ""
    next_number: int = 1


class Seller(_Record, frozen=True, kw_only=True, tag="vendedores"):
    topic = "vendedores"
    name: str
    commission_pct: Decimal = Decimal(0)
    active: bool = True


class StockLevel(_Record, frozen=True, kw_only=True, tag="stock"):
    topic = "stock"
    product: Key
    quantity: Decimal
    minimum: Decimal = Decimal(0)


class ComboItem(msgspec.Struct, frozen=True, kw_only=True):
    product: Key
    quantity: Decimal


class Combo(_Record, frozen=True, kw_only=True, tag="combos"):
    topic = "combos"
    name: str
    price: Decimal
    items: list[ComboItem]
    active: bool = True


class Offer(_Record, frozen=True, kw_only=True, tag="ofertas"):
    topic = "ofertas"
    product: Key
    price: Decimal
    valid_from: dt.datetime
    valid_to: dt.datetime


class News(_Record, frozen=True, kw_only=True, tag="noticias"):
    topic = "noticias"
    title: str
    text: str
    image: Sha256 | None = None
    valid_from: dt.datetime
    valid_to: dt.datetime


class Table(_Record, frozen=True, kw_only=True, tag="mesas"):
    """A restaurant table or a hotel room."""

    topic = "mesas"
    name: str
    kind: Literal["table", "room"] = "table"
    area: str = ""
    seats: int = 0


Record = (
    Company
    | User
    | Permission
    | Tax
    | Certificate
    | Brand
    | Family
    | Report
    | Setting
    | Product
    | Customer
    | Account
    | PaymentMethod
    | BankCard
    | Supplier
    | ReceiptBook
    | Seller
    | StockLevel
    | Combo
    | Offer
    | News
    | Table
)

RECORD_TYPES: tuple[type[_Record], ...] = Record.__args__

# topic -> the record kinds it holds (configuracion holds several)
KINDS_BY_TOPIC: dict[str, tuple[type[_Record], ...]] = {}
for _kind in RECORD_TYPES:
    KINDS_BY_TOPIC.setdefault(_kind.topic, ())
    KINDS_BY_TOPIC[_kind.topic] += (_kind,)


def record_topic(record: Record) -> str:
    return record.topic


def image_of(record: Record) -> str | None:
    """The content address of the image a record refers to, if any."""
    return getattr(record, "image", None)


# A restaurant lays tables, a hotel lets rooms: each terminal kind holds its own kind of
# `mesas` record only (a shop none: its terminals are never offered the topic).
TABLE_KIND_OF_TERMINAL: dict[str, str] = {"restaurant": "table", "hotel": "room"}


def for_terminal(record: Record, terminal_kind: str | None) -> bool:
    """False for a record a terminal of `terminal_kind` must not hold (a room in a
    restaurant, a table in a hotel); True for every other record, or with no kind given."""
    if terminal_kind is None or not isinstance(record, Table):
        return True
    return TABLE_KIND_OF_TERMINAL.get(terminal_kind) == record.kind
