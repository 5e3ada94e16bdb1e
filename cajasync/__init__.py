"""cajasync: point-of-sale terminals and a back-office server kept in sync over RabbitMQ.

This module is the one public face. A POS writes::

    from cajasync import record, track, Replica, Sale, Product

and the back office ``from cajasync import catalog``. Nothing else is needed.

The names are resolved lazily (PEP 562): ``import cajasync.errors`` from the message
schemas at the bottom of the house must not pull in the wings above them, so this module
imports nothing at load time and finds each name on first use. Where the code behind a
name lives: messages in :mod:`schemas`, the write side in :mod:`outbox`, the read side in
:mod:`inbox`, the shared core in :mod:`cajasync.core` (see README's layout table).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it (a module itself when the value ends with ":module")
_FACE: dict[str, str] = {
    # writing operations, in the POS's own transaction
    "record": "outbox.record",
    "record_new_version": "outbox.record",
    "record_weekly_file": "outbox.record",
    "Recorded": "outbox.record",
    "track": "outbox.orm",
    # the POS's database engine, set up for the relay beside it
    "pos_engine": "cajasync.core.db",
    "configure_pos_engine": "cajasync.core.db",
    "reading": "cajasync.core.db",
    # reading master data from the terminal's replica
    "Replica": "inbox.replica_api",
    # the back office's master data
    "catalog": "outbox.catalog:module",
    # operations (up) and their parts
    "Operation": "schemas.ops",
    "Sale": "schemas.ops",
    "SaleLine": "schemas.ops",
    "SalePayment": "schemas.ops",
    "SaleTotals": "schemas.ops",
    "CardData": "schemas.ops",
    "CashPayment": "schemas.ops",
    "ZClose": "schemas.ops",
    "TaxTotal": "schemas.ops",
    "MethodTotal": "schemas.ops",
    "WeeklyFileChunk": "schemas.ops",
    # records (down)
    "Record": "schemas.records",
    "Company": "schemas.records",
    "User": "schemas.records",
    "Permission": "schemas.records",
    "Tax": "schemas.records",
    "Certificate": "schemas.records",
    "Brand": "schemas.records",
    "Family": "schemas.records",
    "Report": "schemas.records",
    "Setting": "schemas.records",
    "Product": "schemas.records",
    "Customer": "schemas.records",
    "Account": "schemas.records",
    "PaymentMethod": "schemas.records",
    "BankCard": "schemas.records",
    "Supplier": "schemas.records",
    "ReceiptBook": "schemas.records",
    "Seller": "schemas.records",
    "StockLevel": "schemas.records",
    "ComboItem": "schemas.records",
    "Combo": "schemas.records",
    "Offer": "schemas.records",
    "News": "schemas.records",
    "Table": "schemas.records",
    # every error a caller sees
    "CajasyncError": "cajasync.errors",
    "ConfigError": "cajasync.errors",
    "BrokerUnavailable": "cajasync.errors",
    "StoreError": "cajasync.errors",
    "StoreUnavailable": "cajasync.errors",
    "StoreDataError": "cajasync.errors",
    "NotInitialised": "cajasync.errors",
    "InvalidMessage": "cajasync.errors",
    "UnknownOperation": "cajasync.errors",
    "CatalogError": "cajasync.errors",
    "PullTimedOut": "cajasync.errors",
    "PullCancelled": "cajasync.errors",
    "NoAnswer": "cajasync.errors",
    "NotAuthorised": "cajasync.errors",
}

__all__ = ["__version__", *sorted(_FACE)]


def __getattr__(name: str) -> Any:
    where = _FACE.get(name)
    if where is None:
        raise AttributeError(f"module 'cajasync' has no attribute {name!r}")
    module_name, _, what = where.partition(":")
    module = import_module(module_name)
    value = module if what == "module" else getattr(module, name)
    globals()[name] = value  # found once; later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACE))


if TYPE_CHECKING:  # what type checkers and editors see; never run
    from cajasync.core.db import configure_pos_engine, pos_engine, reading
    from cajasync.errors import (
        BrokerUnavailable,
        CajasyncError,
        CatalogError,
        ConfigError,
        InvalidMessage,
        NoAnswer,
        NotAuthorised,
        NotInitialised,
        PullCancelled,
        PullTimedOut,
        StoreDataError,
        StoreError,
        StoreUnavailable,
        UnknownOperation,
    )
    from inbox.replica_api import Replica
    from outbox import catalog
    from outbox.orm import track
    from outbox.record import Recorded, record, record_new_version, record_weekly_file
    from schemas.ops import (
        CardData,
        CashPayment,
        MethodTotal,
        Operation,
        Sale,
        SaleLine,
        SalePayment,
        SaleTotals,
        TaxTotal,
        WeeklyFileChunk,
        ZClose,
    )
    from schemas.records import (
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
