"""The main area's views of operations: Ventas, Pagos, Cierre Z and Archivo Semanal
(`OperationsView`), and Operaciones Pendientes (`PendingView`), built by `make_view`
(views.py) when first shown.

A topic's operations as `cajasync ventas` lists them (outbox/views.py, with what the server
holds through `held_lookup`), Operaciones Pendientes as `cajasync pending list`
(outbox/pending.py), a page at a time. `r` replays the marked operations (`cajasync
pending replay`), Enter opens one on both sides (cli/window/records.py). Their own module:
the window starts on Configuración, and what these read (the sales' business columns, the
pending list, the server's held operations) stays out of its start.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Label, Select

from cajasync.core.periods import Period
from cajasync.processes.questions import held_lookup
from cli.sales import business_cells
from cli.window.context import PENDING, WindowContext
from cli.window.table import Column, Confirm, Page, RowSource, TableRow, VirtualTable, in_thread
from cli.window.views import OPTION_LABELS, OptionView, cell
from outbox.pending import PendingRow, pending_page, replay
from outbox.views import (
    NUMBERED,
    VIEW_STATES,
    FileView,
    Filters,
    Listing,
    OpView,
    ServerHeld,
    ServerLookup,
    list_operations,
    with_server,
)
from schemas.topics import CASH_PAYMENTS, SALES, WEEKLY_FILES, Z_CLOSES

SERVER_TIMEOUT_S = 5.0  # a page waits this long for the server's column at most

STATE_LABELS: dict[str, str] = {
    "pending": "pendiente",
    "sent": "enviada",
    "acked": "confirmada",
    "rejected": "rechazada",
    "purged": "depurada",
}
SERVER_STATUS_LABELS: dict[str, str] = {
    "applied": "aplicada",
    "stale": "vieja",
    "rejected": "rechazada",
}


def state_label(state: str | None) -> str:
    return "" if state is None else STATE_LABELS.get(state, state)


def server_note(note: str) -> str:
    """Why the server's column is empty, in the window's words."""
    if not note:
        return ""
    return "Servidor no consultado" + (f": {note.split(': ', 1)[1]}" if ": " in note else "")


# -- operations (Ventas, Pagos, Cierre Z, Archivo Semanal) ---------------------------------

UP_COLUMNS: dict[str, list[str]] = {
    SALES: ["Ticket", "Fecha", "Total", "Cliente"],
    CASH_PAYMENTS: ["Fecha", "Tipo", "Destinatario", "Importe", "Medio"],
    Z_CLOSES: ["Z", "Período", "Ventas", "Total"],
}
STATE_COLUMNS = ["Estado", "Intentos", "Último error", "Servidor", "Recibida"]
FILE_COLUMNS = ["Archivo", "Semana", "Tamaño", "Partes", "Estado", "Registrado"]
FILE_SERVER_COLUMNS = ["Servidor (partes)", "Recibido"]
ANY = "*"  # the state filter's "every state"


class OperationsSource(RowSource):
    """A topic's operations newest first, as `cajasync ventas` lists them; the server's
    column is asked after the till's rows are shown (`enrich`), and not again once it
    did not answer (until the view reloads)."""

    def __init__(
        self,
        ctx: WindowContext,
        topic: str,
        filters: Filters,
        lookup: Callable[[], ServerLookup] | None = None,
    ) -> None:
        self.ctx = ctx
        self.topic = topic
        self.filters = filters
        self._lookup = lookup or (
            lambda: held_lookup(ctx.engine, ctx.settings, topic, timeout=SERVER_TIMEOUT_S)
        )
        self._server: ServerLookup | None = None
        self.server_note = ""

    def fetch(self, offset: int, limit: int) -> Page:
        f = self.filters
        page = Filters(f.period, f.state, f.customer, f.number, limit, offset)
        listing = list_operations(self.ctx.engine, self.topic, page)
        return self._page(listing, server_note(self.server_note))

    def enrich(self, offset: int, page: Page) -> Page | None:
        if self.server_note or not page.rows:
            return None
        if self._server is None:
            self._server = self._lookup()
        items: Any = [row.item for row in page.rows]
        listing = Listing(topic=self.topic, total=page.total, server_asked=False, rows=items)
        listing = with_server(listing, self._server)
        if not listing.server_asked:
            self.server_note = listing.server_note or "not asked: no answer"
        return self._page(listing, server_note(self.server_note))

    def _page(self, listing: Listing, note: str) -> Page:
        asked = listing.server_asked
        rows = [
            self._file_row(row, asked) if isinstance(row, FileView) else self._op_row(row, asked)
            for row in listing.rows
        ]
        return Page(listing.total, rows, note)

    def _op_row(self, op: OpView, asked: bool) -> TableRow:
        tz = self.ctx.tz
        business = [cell(value, tz) for value in business_cells(self.topic, op.details, tz)]
        cells = (
            *business,
            state_label(op.state),
            cell(op.attempts, tz),
            cell(op.last_error, tz),
            *_server_cells(op.server, asked, tz),
        )
        return TableRow(op.op_id, cells, op_ids=(op.op_id,), item=op)

    def _file_row(self, f: FileView, asked: bool) -> TableRow:
        tz = self.ctx.tz
        chunks = f"{f.chunks_held}/{f.chunk_count if f.chunk_count is not None else '?'}"
        server = ("", "")
        if asked:
            held = f"{f.server_chunks}/{f.chunk_count}" if f.server_chunks else "no"
            server = (held, cell(f.server_received_at, tz))
        cells = (
            f.file_name or "(depurado: sin nombre)",
            cell(f.week, tz),
            _size(f.size),
            chunks,
            state_label(f.state),
            cell(f.recorded_at, tz),
            *server,
        )
        key = f.sha256 or f"purge-{f.seq}"
        return TableRow(key, cells, op_ids=tuple(f.op_ids), item=f)


def _server_cells(held: ServerHeld | None, asked: bool, tz: dt.tzinfo) -> tuple[str, str]:
    if not asked:
        return "", ""
    if held is None:
        return "no", ""
    version = f"v{held.version}"
    if held.status != "applied":
        version += f" {SERVER_STATUS_LABELS.get(held.status, held.status)}"
    return version, cell(held.received_at, tz)


def _size(size: int | None) -> str:
    return "" if size is None else f"{size:,} B".replace(",", ".")


class ReplayingView(OptionView):
    """A view of operations: rows are marked with space, `r` replays the marked ones (or
    the one under the cursor) after a confirmation, Enter opens one on both sides."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "replay", "Reenviar")]
    selectable = True
    state: str | None = None  # the state filter (`#state`), None for every state

    def reload(self) -> None:
        """Read again, with the period filter's label following ctx.period."""
        if self.ready:
            self.query_one("#period", Label).update(period_label(self.ctx.period))
        super().reload()

    @on(Select.Changed, "#state")
    def _state_changed(self, event: Select.Changed) -> None:
        state = None if event.value in (ANY, Select.NULL) else str(event.value)
        if state != self.state:
            self.state = state
            self.reload()

    def selected_op_ids(self) -> list[uuid.UUID]:
        ids = [op for row in self.table.selected_rows() for op in row.op_ids]
        return [uuid.UUID(op) for op in dict.fromkeys(ids)]

    def action_replay(self) -> None:
        ids = self.selected_op_ids()
        if not ids and (row := self.table.current_row) is not None:
            ids = [uuid.UUID(op) for op in row.op_ids]
        if not ids:
            self.say("Nada para reenviar: marque operaciones con la barra espaciadora")
            return
        question = f"¿Reenviar {len(ids)} operación(es) al servidor?"
        self.app.push_screen(Confirm(question, "Reenviar"), lambda yes: self._replay(ids, yes))

    def _replay(self, ids: Sequence[uuid.UUID], yes: bool | None) -> None:
        self.outcome = ""
        if not yes:
            self.say("Nada reenviado")
            return
        engine = self.ctx.engine
        in_thread(
            self,
            lambda: replay(engine, ids),
            lambda rows: self._replayed(len(ids), rows),
            lambda message: self.say(f"No se pudo reenviar: {message}", error=True),
            group="replay",
        )

    def _replayed(self, operations: int, rows: int) -> None:
        self.outcome = (
            f"{operations} operación(es) en cola para reenviar ({rows} filas): "
            "salen con Transmitir o con la próxima pasada del sincronizador"
        )
        self.say(self.outcome)
        self.reload()

    def open_row(self, row: TableRow) -> None:
        if row.op_ids:
            # imported when first opened: kept out of the window's start
            from cli.window.records import RecordScreen

            self.app.push_screen(RecordScreen(self.ctx, self.topic_for(row), row.op_ids[-1]))

    def topic_for(self, row: TableRow) -> str:
        return self.option

    @on(VirtualTable.Chosen)
    def _open(self, event: VirtualTable.Chosen) -> None:
        self.open_row(event.row)


class OperationsView(ReplayingView):
    """Ventas, Pagos, Cierre Z or Archivo Semanal: the till's operations newest first
    with their business columns, state, attempts, last error and what the server holds;
    filtered by state, ticket number (ventas, cierres Z) and ctx.period."""

    def __init__(self, ctx: WindowContext, topic: str, *, id: str | None = None) -> None:
        self.number: int | None = None
        super().__init__(ctx, topic, id=id)

    def columns(self) -> list[Column]:
        if self.option == WEEKLY_FILES:
            titles = [*FILE_COLUMNS, *FILE_SERVER_COLUMNS]
        else:
            titles = [*UP_COLUMNS[self.option], *STATE_COLUMNS]
        right = {"Total", "Importe", "Tamaño", "Ventas", "Intentos"}
        return [Column(title, right=title in right) for title in titles]

    def source(self) -> RowSource:
        filters = Filters(self.ctx.period, self.state, None, self.number)
        return OperationsSource(self.ctx, self.option, filters)

    def compose_filters(self) -> ComposeResult:
        states = [(STATE_LABELS[s].capitalize(), s) for s in VIEW_STATES]
        with Horizontal(classes="view-filters"):
            yield Label("Estado")
            yield Select([("Todos", ANY), *states], value=ANY, allow_blank=False, id="state")
            if self.option in NUMBERED:
                yield Label("Número")
                yield Input(placeholder="todos", type="integer", id="number")
            yield Label(period_label(self.ctx.period), id="period")

    @on(Input.Submitted, "#number")
    def _number_changed(self, event: Input.Submitted) -> None:
        self.number = int(event.value) if event.value.strip() else None
        self.reload()
        self.table.focus()

    def describe(self, total: int) -> str:
        what = "archivos" if self.option == WEEKLY_FILES else "operaciones"
        return f"{self.label}: {total:,} {what}".replace(",", ".")


def period_label(period: Period) -> str:
    """ctx.period in the window's words."""
    if period.open:
        return "Fechas: todas"
    since = period.since.strftime("%Y-%m-%d %H:%M") if period.since else "el inicio"
    until = period.until.strftime("%Y-%m-%d %H:%M") if period.until else "hoy"
    return f"Fechas: desde {since} hasta {until}"


# -- Operaciones Pendientes ----------------------------------------------------------------

PENDING_STATES = ("pending", "sent", "rejected")


class PendingSource(RowSource):
    """Rows not acked yet, oldest first, as `cajasync pending list` lists them."""

    def __init__(self, ctx: WindowContext, state: str | None) -> None:
        self.ctx = ctx
        self.state = state

    def fetch(self, offset: int, limit: int) -> Page:
        page = pending_page(
            self.ctx.engine, state=self.state, period=self.ctx.period, limit=limit, offset=offset
        )
        return Page(page.total, [self._row(op) for op in page.ops])

    def _row(self, op: PendingRow) -> TableRow:
        tz = self.ctx.tz
        cells = (
            OPTION_LABELS.get(op.topic, op.topic),
            cell(op.reference, tz),
            cell(op.amount, tz),
            cell(op.customer, tz),
            str(op.version),
            state_label(op.state),
            str(op.attempts),
            cell(op.recorded_at, tz),
            cell(op.last_error, tz),
        )
        return TableRow(f"{op.op_id}/{op.version}", cells, op_ids=(op.op_id,), item=op)


class PendingView(ReplayingView):
    """Operaciones Pendientes: every operation the server has not acknowledged yet (never
    sent, sent, rejected), oldest first, filtered by state and ctx.period."""

    def __init__(self, ctx: WindowContext, *, id: str | None = None) -> None:
        super().__init__(ctx, PENDING, id=id)

    def columns(self) -> list[Column]:
        titles = ["Tema", "Ticket / archivo", "Importe", "Cliente", "Versión", "Estado"]
        titles += ["Intentos", "Registrada", "Último error"]
        right = {"Importe", "Versión", "Intentos"}
        return [Column(title, right=title in right) for title in titles]

    def source(self) -> RowSource:
        return PendingSource(self.ctx, self.state)

    def compose_filters(self) -> ComposeResult:
        states = [(STATE_LABELS[s].capitalize(), s) for s in PENDING_STATES]
        with Horizontal(classes="view-filters"):
            yield Label("Estado")
            yield Select([("Todos", ANY), *states], value=ANY, allow_blank=False, id="state")
            yield Label(period_label(self.ctx.period), id="period")

    def topic_for(self, row: TableRow) -> str:
        item = row.item
        return item.topic if isinstance(item, PendingRow) else SALES

    def describe(self, total: int) -> str:
        return f"{self.label}: {total:,} sin confirmar por el servidor".replace(",", ".")
