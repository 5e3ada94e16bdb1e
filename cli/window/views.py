"""What the window's main area shows for each option: records, operations, pending ones.

    view = make_view(ctx, "productos")   # or CONFIG, "ventas", PENDING...
    view.reload()                        # after ctx.period changed or an action ran
    view.selected_op_ids()               # operations marked with space ([] for records)

Every view is a `VirtualTable` (cli/window/table.py) over the same library reads as the
CLI, a page at a time. Here: the frame every view shares and the records of Configuración
and the download topics, the replica as `cajasync replica list` reads it
(inbox/replica_api.py); Enter opens a record on both sides (cli/window/records.py). The
views of operations (Ventas, Pagos, Cierre Z, Archivo Semanal, Operaciones Pendientes) are
in cli/window/operations.py, imported when one is first shown: the window starts on
Configuración.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar

from rich.text import Text
from sqlalchemy.engine import Engine
from textual import on
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static

from cajasync.errors import ConfigError
from cli.window.context import CONFIG, PENDING, WindowContext
from cli.window.table import Column, ListSource, Page, RowSource, TableRow, VirtualTable
from inbox.replica_api import Replica
from schemas.records import Record
from schemas.topics import (
    CASH_PAYMENTS,
    DOWN_TOPIC_SCOPES,
    DOWN_TOPICS,
    SALES,
    UP_TOPICS,
    WEEKLY_FILES,
    Z_CLOSES,
)

OPTION_LABELS: dict[str, str] = {
    CONFIG: "Configuración",
    "productos": "Productos",
    "clientes": "Clientes",
    "plan-de-cuentas": "Plan de Cuentas",
    "formas-de-pago": "Formas de Pago",
    "bancos-tarjetas": "Banco Tarjeta",
    "proveedores": "Proveedores",
    "talonarios": "Talonarios",
    "vendedores": "Vendedores",
    "stock": "Stock Productos",
    "combos": "Combos",
    "ofertas": "Ofertas",
    "noticias": "Noticias/Publicidad",
    "mesas": "Mesas/Habitaciones",
    SALES: "Ventas",
    CASH_PAYMENTS: "Pagos",
    Z_CLOSES: "Cierre Z",
    WEEKLY_FILES: "Archivo Semanal",
    PENDING: "Operaciones Pendientes",
}


def make_view(ctx: WindowContext, option: str) -> OptionView:
    """The view of one option of the list: CONFIG or a download topic (its records), an up
    topic (its operations) or PENDING (Operaciones Pendientes)."""
    if option == CONFIG or option in DOWN_TOPICS:
        return RecordView(ctx, option)
    if option in UP_TOPICS or option == PENDING:
        # imported when first shown: the operations' reads are kept out of the window's start
        from cli.window.operations import OperationsView, PendingView

        return OperationsView(ctx, option) if option in UP_TOPICS else PendingView(ctx)
    raise ConfigError(f"the window has no option {option!r}")


# -- cells ---------------------------------------------------------------------------------


def cell(value: object, tz: dt.tzinfo) -> str:
    """One value as a table shows it: dates in the till's zone, yes/no, nested as JSON."""
    match value:
        case None:
            return ""
        case bool():
            return "sí" if value else "no"
        case dt.datetime():
            moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        case Decimal() | int() | float() | str():
            return str(value).replace("\n", " ")
        case _:
            return json.dumps(value, default=str, ensure_ascii=False)


# -- the common frame of a view ------------------------------------------------------------


class OptionView(Widget):
    """What the main area shows for one option: a table, and a status line under it."""

    DEFAULT_CSS = """
    OptionView { height: 1fr; layout: vertical; }
    OptionView > .view-filters { height: auto; padding: 0 1; }
    OptionView > .view-filters > Label { padding: 1 1 0 1; }
    OptionView > .view-filters > Select { width: 24; }
    OptionView > .view-filters > Input { width: 14; }
    OptionView > .view-status { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    OptionView > .view-status.-error { color: $error; }
    """

    def __init__(self, ctx: WindowContext, option: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.ctx = ctx
        self.option = option
        self.message = ""  # the last thing said in the status line
        self.outcome = ""  # what the last action did: said after the reload it causes
        self.ready = False  # mounted: reloads read
        self.table = VirtualTable(
            self.columns(),
            ListSource([]),
            selectable=self.selectable,
            autoload=False,
            classes="view-table",
        )

    selectable: ClassVar[bool] = False

    @property
    def label(self) -> str:
        return OPTION_LABELS.get(self.option, self.option)

    def columns(self) -> list[Column]:
        raise NotImplementedError

    def source(self) -> RowSource:
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        yield from self.compose_filters()
        yield self.table
        yield Static("", classes="view-status")

    def compose_filters(self) -> ComposeResult:
        return iter(())

    def on_mount(self) -> None:
        self.ready = True
        self.reload()

    def reload(self) -> None:
        """Read again (ctx.period and the filters as they are now), in a thread; before
        the view is mounted this does nothing (mounting reads)."""
        if not self.ready:
            return
        self.table.reload(self.source(), keep_cursor=True)

    def selected_op_ids(self) -> list[uuid.UUID]:
        return []

    def say(self, text: str, *, error: bool = False) -> None:
        """A line under the table (and a toast for errors)."""
        self.message = text
        status = self.query_one(".view-status", Static)
        status.update(Text(text))
        status.set_class(error, "-error")
        if error:
            self.notify(text, severity="error", timeout=8)

    @on(VirtualTable.Loaded)
    def _loaded(self, event: VirtualTable.Loaded) -> None:
        parts = [self.describe(event.total), event.note, self.outcome]
        self.say(" · ".join(part for part in parts if part))

    @on(VirtualTable.Failed)
    def _failed(self, event: VirtualTable.Failed) -> None:
        self.say(f"No se pudo leer {self.label}: {event.message}", error=True)

    def describe(self, total: int) -> str:
        return f"{self.label}: {total:,} registros".replace(",", ".")


# -- records (Configuración and the download topics) ---------------------------------------

Getter = Callable[[Any], object]


def _field(name: str) -> Getter:
    return lambda record: getattr(record, name, None)


def _kind(record: Record) -> str:
    tag = type(record).__struct_config__.tag
    return str(tag).rsplit("/", 1)[-1]


def _config_name(record: Record) -> object:
    return getattr(record, "name", None) or getattr(record, "value", None)


NAME = ("Nombre", _field("name"))
RECORD_COLUMNS: dict[str, list[tuple[str, Getter]]] = {
    CONFIG: [("Tipo", _kind), ("Nombre / valor", _config_name)],
    "productos": [
        NAME,
        ("Precio", _field("price")),
        ("IVA %", _field("tax_rate")),
        ("Marca", _field("brand")),
        ("Familia", _field("family")),
        ("Activo", _field("active")),
    ],
    "clientes": [
        NAME,
        ("CUIT", _field("tax_id")),
        ("Lista", _field("price_list")),
        ("Límite", _field("credit_limit")),
        ("Email", _field("email")),
    ],
    "plan-de-cuentas": [NAME, ("Tipo", _field("kind")), ("Padre", _field("parent"))],
    "formas-de-pago": [
        NAME,
        ("Tipo", _field("kind")),
        ("Banco/tarjeta", _field("bank_card")),
        ("Recargo %", _field("surcharge_pct")),
        ("Activa", _field("active")),
    ],
    "bancos-tarjetas": [
        ("Banco", _field("bank")),
        ("Tarjeta", _field("card")),
        ("Cuotas", _field("max_installments")),
        ("Recargo %", _field("surcharge_pct")),
    ],
    "proveedores": [NAME, ("Tipo", _field("kind")), ("CUIT", _field("tax_id"))],
    "talonarios": [
        NAME,
        ("Comprobante", _field("voucher_type")),
        ("Letra", _field("letter")),
        ("Próximo", _field("next_number")),
    ],
    "vendedores": [NAME, ("Comisión %", _field("commission_pct")), ("Activo", _field("active"))],
    "stock": [
        ("Producto", _field("product")),
        ("Cantidad", _field("quantity")),
        ("Mínimo", _field("minimum")),
    ],
    "combos": [
        NAME,
        ("Precio", _field("price")),
        ("Productos", lambda combo: len(combo.items)),
        ("Activo", _field("active")),
    ],
    "ofertas": [
        ("Producto", _field("product")),
        ("Precio", _field("price")),
        ("Desde", _field("valid_from")),
        ("Hasta", _field("valid_to")),
    ],
    "noticias": [
        ("Título", _field("title")),
        ("Desde", _field("valid_from")),
        ("Hasta", _field("valid_to")),
    ],
    "mesas": [
        NAME,
        ("Tipo", _field("kind")),
        ("Área", _field("area")),
        ("Lugares", _field("seats")),
    ],
}
RIGHT = frozenset({"Precio", "IVA %", "Límite", "Recargo %", "Cantidad", "Mínimo", "Versión"})
IMAGES = frozenset({"productos", "noticias"})
IMAGE_HELD, IMAGE_MISSING = "sí", "falta"


class RecordSource(RowSource):
    """A download topic's live replica records by key, a page at a time (stock of
    `location`: the till's own when None, every one with ALL_LOCATIONS). The count is
    read with the first page; a reload (a new source) reads it again."""

    def __init__(self, engine: Engine, topic: str, tz: dt.tzinfo, location: str | None) -> None:
        self.engine = engine
        self.topic = topic
        self.tz = tz
        self.location = location
        self.total: int | None = None

    def fetch(self, offset: int, limit: int) -> Page:
        replica = Replica(self.engine)
        if self.total is None:
            self.total = replica.count(self.topic, location=self.location).get(self.topic, 0)
        total = self.total
        located = replica.located(self.topic, limit=limit, location=self.location, offset=offset)
        held: set[str] = set()
        if self.topic in IMAGES:
            held = replica.held_images([h for _l, r in located if (h := getattr(r, "image", None))])
        return Page(total, [self._row(where, record, held) for where, record in located])

    def _row(self, where: str | None, record: Record, held: set[str]) -> TableRow:
        cells = [record.key]
        cells += [cell(getter(record), self.tz) for _title, getter in RECORD_COLUMNS[self.topic]]
        if self.topic in IMAGES:
            image = getattr(record, "image", None)
            cells.append("" if image is None else IMAGE_HELD if image in held else IMAGE_MISSING)
        if DOWN_TOPIC_SCOPES.get(self.topic) == "loc":
            cells.insert(0, where or "")
        cells.append(str(record.version))
        return TableRow(record.key, tuple(cells), item=record)


class RecordView(OptionView):
    """Configuración or a download topic: the replica's records, by key. Stock is the
    till's own location's unless `location` names another (ALL_LOCATIONS: every one)."""

    def __init__(
        self,
        ctx: WindowContext,
        topic: str,
        *,
        location: str | None = None,
        id: str | None = None,
    ) -> None:
        self.location = location
        super().__init__(ctx, topic, id=id)

    def columns(self) -> list[Column]:
        titles = ["Clave", *(title for title, _g in RECORD_COLUMNS[self.option])]
        if self.option in IMAGES:
            titles.append("Imagen")
        if DOWN_TOPIC_SCOPES.get(self.option) == "loc":
            titles.insert(0, "Ubicación")
        return [Column(title, right=title in RIGHT) for title in [*titles, "Versión"]]

    def source(self) -> RowSource:
        return RecordSource(self.ctx.engine, self.option, self.ctx.tz, self.location)

    def set_location(self, location: str | None) -> None:
        """Show another location's stock (None: the till's own)."""
        self.location = location
        self.reload()

    @on(VirtualTable.Chosen)
    def _open(self, event: VirtualTable.Chosen) -> None:
        # imported when first opened: kept out of the window's start
        from cli.window.records import RecordScreen

        self.app.push_screen(RecordScreen(self.ctx, self.option, event.row.key))
