"""Comparar registros: the keys that differ between till and server, and one key on both
sides.

`DiffScreen` runs the record-level diff of `cajasync diff` (cajasync/processes/diff.py)
for ctx.period in a thread and lists the keys missing on the server, missing on the till
and held in different versions; Enter opens one in `RecordScreen`, which shows what the
till holds of it (the replica's record, or the operation with every version as `cajasync
pending show` does) beside what the server holds (asked through the request queue, as
`cajasync diff TOPIC --show KEY`: cajasync/processes/sides.py).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from cajasync.processes.diff import DiffResult, diff
from cajasync.processes.sides import Side, server_side, terminal_side
from cli.window.context import WindowContext
from cli.window.table import Column, Confirm, ListSource, TableRow, VirtualTable, in_thread
from outbox.pending import replay
from schemas.codec import to_json

DIFF_TIMEOUT_S = 20.0
RECORD_TIMEOUT_S = 10.0
MISSING_ON_SERVER = "Falta en el servidor"
MISSING_ON_TERMINAL = "Falta en la terminal"
VERSION_DIFFERS = "Versión distinta"
STATUS_LABELS = {
    "absent": "no lo tiene",
    "live": "vigente",
    "deleted": "borrado",
    "applied": "aplicada",
    "pending": "pendiente",
    "sent": "enviada",
    "acked": "confirmada",
    "rejected": "rechazada",
    "purged": "depurada",
}

SCREEN_CSS = """
.screen-title { height: auto; padding: 0 1; text-style: bold; }
.screen-status { height: auto; padding: 0 1; }
.screen-status.-error { color: $error; }
"""


def _status(status: str) -> str:
    return STATUS_LABELS.get(status, status)


class DiffScreen(Screen[None]):
    """ "Comparar registros" of one topic for ctx.period: the exact keys that differ."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Volver"),
        Binding("u", "rerun", "Comparar de nuevo"),
        Binding("r", "replay", "Reenviar"),
    ]
    DEFAULT_CSS = SCREEN_CSS

    def __init__(self, ctx: WindowContext, topic: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.topic = topic
        self.result: DiffResult | None = None
        self.message = ""
        columns = [Column("Diferencia"), Column("Clave"), Column("Terminal"), Column("Servidor")]
        self.table = VirtualTable(columns, ListSource([]), selectable=True)

    def compose(self) -> ComposeResult:
        yield Static(f"Comparar registros: {self.topic}", classes="screen-title")
        yield Static("Comparando con el servidor…", id="summary", classes="screen-status")
        yield self.table
        yield Static("", id="advice", classes="screen-status")
        yield Footer()

    def on_mount(self) -> None:
        self.action_rerun()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_rerun(self) -> None:
        self._say("Comparando con el servidor…")
        ctx, topic = self.ctx, self.topic
        in_thread(
            self,
            lambda: diff(ctx.engine, ctx.settings, topic, ctx.period, timeout=DIFF_TIMEOUT_S),
            self._shown,
            lambda message: self._say(f"No se pudo comparar: {message}", error=True),
            group="diff",
            exclusive=True,
        )

    def _shown(self, result: DiffResult) -> None:
        self.result = result
        self.table.reload(ListSource(diff_rows(result)))
        what = "operaciones" if result.direction == "up" else "registros"
        summary = (
            f"{result.topic}: {result.terminal_count} {what} en la terminal, "
            f"{result.server_count} en el servidor"
        )
        if result.equal:
            summary += ": nada difiere, cada clave está en ambos lados con la misma versión"
        self._say(summary)
        self.query_one("#advice", Static).update(Text(advice(result)))

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message = text
        summary = self.query_one("#summary", Static)
        summary.update(Text(text))
        summary.set_class(error, "-error")

    @on(VirtualTable.Chosen)
    def _open(self, event: VirtualTable.Chosen) -> None:
        self.app.push_screen(RecordScreen(self.ctx, self.topic, event.row.key))

    def action_replay(self) -> None:
        """Send again the marked operations the server lacks (an up topic's)."""
        if self.result is None or self.result.direction != "up":
            return
        rows = self.table.selected_rows() or [r for r in [self.table.current_row] if r]
        ids = [
            uuid.UUID(row.key)
            for row in rows
            if row.cells[0] == MISSING_ON_SERVER and self.result.states.get(row.key) != "purged"
        ]
        if not ids:
            self._say("Marque operaciones que faltan en el servidor (y no depuradas) para reenviar")
            return
        question = f"¿Reenviar {len(ids)} operación(es) que faltan en el servidor?"
        self.app.push_screen(Confirm(question, "Reenviar"), lambda yes: self._replay(ids, yes))

    def _replay(self, ids: list[uuid.UUID], yes: bool | None) -> None:
        if not yes:
            return
        engine = self.ctx.engine
        in_thread(
            self,
            lambda: replay(engine, ids),
            lambda rows: self._say(
                f"{len(ids)} operación(es) en cola para reenviar ({rows} filas)"
            ),
            lambda message: self._say(f"No se pudo reenviar: {message}", error=True),
            group="replay",
        )


def diff_rows(result: DiffResult) -> list[TableRow]:
    """One row per key that differs: what differs, the key, each side's version or state."""
    rows = [
        TableRow(key, (MISSING_ON_SERVER, key, _status(result.states.get(key, "")), ""))
        for key in result.missing_on_server
    ]
    rows += [
        TableRow(key, (MISSING_ON_TERMINAL, key, "", "")) for key in result.missing_on_terminal
    ]
    rows += [
        TableRow(d.key, (VERSION_DIFFERS, d.key, f"v{d.terminal}", f"v{d.server}"))
        for d in result.version_differs
    ]
    return rows


def advice(result: DiffResult) -> str:
    """What to do about the differences, in the seed's words."""
    if result.equal:
        return ""
    if result.direction == "up":
        parts = []
        unsent = [k for k in result.missing_on_server if result.states.get(k) != "purged"]
        if unsent:
            parts.append(f"{len(unsent)} sin pasar al servidor: márquelas y Reenviar (r)")
        if result.missing_on_terminal:
            parts.append(
                f"{len(result.missing_on_terminal)} solo en el servidor: cargadas a mano en el "
                "servidor o registradas por otra copia de esta caja"
            )
        return "; ".join(parts) or "las diferencias son operaciones depuradas"
    parts = []
    if result.missing_on_terminal or result.version_differs:
        parts.append("Obtener datos trae lo que falta o está atrasado en la terminal")
    if result.missing_on_server:
        parts.append("Herramientas › Depurar elimina lo que el servidor ya no tiene")
    return "; ".join(parts)


class RecordScreen(Screen[None]):
    """One key of a topic on the till (left) and on the server (right)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Volver")]
    DEFAULT_CSS = (
        SCREEN_CSS
        + """
    RecordScreen Horizontal { height: 1fr; }
    RecordScreen .side { width: 1fr; border: round $primary; padding: 0 1; }
    """
    )

    def __init__(self, ctx: WindowContext, topic: str, key: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.topic = topic
        self.key = key
        self.terminal: Side | None = None
        self.server: Side | None = None
        self.message = ""

    def compose(self) -> ComposeResult:
        yield Static(f"{self.topic} {self.key}", classes="screen-title")
        yield Static("Leyendo…", id="summary", classes="screen-status")
        with Horizontal():
            with VerticalScroll(classes="side") as left:
                left.border_title = "En la terminal"
                yield Static("Leyendo…", id="terminal")
            with VerticalScroll(classes="side") as right:
                right.border_title = "En el servidor"
                yield Static("Preguntando al servidor…", id="server")
        yield Footer()

    def on_mount(self) -> None:
        ctx, topic, key = self.ctx, self.topic, self.key
        in_thread(
            self,
            lambda: terminal_side(ctx.engine, topic, key),
            lambda side: self._side("terminal", side),
            lambda message: self._failed("terminal", message),
            group="terminal-side",
        )
        in_thread(
            self,
            lambda: server_side(ctx.engine, ctx.settings, topic, key, timeout=RECORD_TIMEOUT_S),
            lambda side: self._side("server", side),
            lambda message: self._failed("server", message),
            group="server-side",
        )

    def action_close(self) -> None:
        self.dismiss(None)

    def _side(self, which: str, side: Side) -> None:
        setattr(self, which, side)
        self.query_one(f"#{which}", Static).update(Text(describe_side(side, self.ctx)))
        self._summarise()

    def _failed(self, which: str, message: str) -> None:
        where = "la terminal" if which == "terminal" else "el servidor"
        self.message = f"No se pudo leer en {where}: {message}"
        self.query_one(f"#{which}", Static).update(Text(self.message))
        summary = self.query_one("#summary", Static)
        summary.set_class(True, "-error")
        summary.update(Text(self.message))

    def _summarise(self) -> None:
        mine, theirs = self.terminal, self.server
        if mine is None or theirs is None:
            return
        if mine.held and theirs.held and mine.version == theirs.version:
            text = f"La misma versión en ambos lados (v{mine.version})"
        elif not theirs.held:
            text = f"El servidor no lo tiene ({_status(theirs.status)})"
        elif not mine.held:
            text = f"La terminal no lo tiene ({_status(mine.status)})"
        else:
            text = f"Versiones distintas: terminal v{mine.version}, servidor v{theirs.version}"
        self.message = text
        self.query_one("#summary", Static).update(Text(text))


def describe_side(side: Side, ctx: WindowContext) -> str:
    """A side as lines of text: its status and version, notes, every field; an operation's
    versions on the till as `pending show` lists them."""
    lines = [f"Estado: {_status(side.status)}"]
    if side.version is not None:
        lines.append(f"Versión: {side.version}")
    if side.location:
        lines.append(f"Ubicación: {side.location}")
    if side.reason:
        lines.append(f"Motivo: {side.reason}")
    if side.received_at is not None:
        lines.append(f"Recibida: {_when(side.received_at, ctx)}")
    for version in side.versions:
        line = f"  v{version.version} (seq {version.seq}): {_status(version.state)}"
        line += (
            f", {version.attempts or 0} intento(s), registrada {_when(version.recorded_at, ctx)}"
        )
        if version.last_error:
            line += f", motivo: {version.last_error}"
        if version.purged_at is not None:
            line += f", depurada {_when(version.purged_at, ctx)}"
        lines.append(line)
    if side.versions and side.data is None:
        lines.append("(depurada de esta caja: su contenido ya no está)")
    if side.data:
        lines.append("")
        lines += [f"{name}: {_value(value)}" for name, value in side.data.items()]
    return "\n".join(lines)


def _when(moment: Any, ctx: WindowContext) -> str:
    return str(moment.astimezone(ctx.tz).strftime("%Y-%m-%d %H:%M:%S"))


def _value(value: object) -> str:
    if isinstance(value, dict | list):
        return to_json(value).decode()
    return str(value)
