"""Herramientas: clean-up screens, each showing what it will delete before it does.

* `PruneScreen`: "Eliminar productos (clientes...) que no existen en el Servidor", the
  prune of `cajasync tools prune` (cajasync/processes/diff.py): the list first, then only
  the confirmed keys the server still lacks are deleted.
* `PurgeScreen`: "Eliminar Operaciones Sincronizadas" (solo MASTER o ADMIN), the purge of
  `cajasync tools purge-synced` (outbox/purge.py): user and password checked against the
  downloaded configuration exactly as the command checks them (inbox/users.py), the plan
  per topic shown, then acknowledged operations deleted and the purge logged.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from cajasync.core.access import Grant
from cajasync.core.periods import Period
from cajasync.processes.diff import PruneResult, prune
from cli.window.context import WindowContext
from cli.window.table import Column, ListSource, TableRow, VirtualTable, in_thread
from inbox.users import authorise_user
from outbox.purge import Purge, PurgePlan, plan_purge, purge

PRUNE_TIMEOUT_S = 20.0
TOOL_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 90%; height: 90%; border: thick $warning; padding: 1 2;
                    background: $surface; }}
{name} .tool-title {{ text-style: bold; height: auto; }}
{name} .tool-status {{ height: auto; margin: 1 0; }}
{name} .tool-status.-error {{ color: $error; }}
{name} Horizontal {{ height: auto; }}
{name} Button {{ margin-right: 2; }}
"""
TOPIC_NAMES = {"productos": "productos", "clientes": "clientes"}


class ToolScreen(ModalScreen[int | None]):
    """A Herramientas screen: a status line that says what happened, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancelar")]

    message = ""

    def say(self, text: str, *, error: bool = False) -> None:
        self.message = text
        status = self.query_one(".tool-status", Static)
        status.update(Text(text))
        status.set_class(error, "-error")

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class PruneScreen(ToolScreen):
    """The records of a download topic the till holds and the server no longer has: the
    list, then (on "Eliminar") the confirmed ones deleted. Dismisses with how many."""

    DEFAULT_CSS = TOOL_CSS.format(name="PruneScreen")

    def __init__(self, ctx: WindowContext, topic: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.topic = topic
        self.keys: list[str] = []
        self.table = VirtualTable([Column("Clave")], ListSource([]))

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"Eliminar {self.topic} que no existen en el Servidor", classes="tool-title"
            )
            yield Static("Comparando con el servidor…", classes="tool-status")
            yield self.table
            with Horizontal():
                yield Button("Eliminar", variant="error", id="prune", disabled=True)
                yield Button("Cancelar", id="cancel")

    def on_mount(self) -> None:
        ctx, topic = self.ctx, self.topic
        in_thread(
            self,
            lambda: prune(ctx.engine, ctx.settings, topic, apply=False, timeout=PRUNE_TIMEOUT_S),
            self._listed,
            lambda message: self.say(f"No se pudo comparar: {message}", error=True),
            group="prune",
        )

    def _listed(self, found: PruneResult) -> None:
        self.keys = found.keys
        self.table.reload(ListSource([TableRow(key, (key,)) for key in found.keys]))
        button = self.query_one("#prune", Button)
        if not found.keys:
            self.say(
                f"Nada que eliminar: la terminal no tiene {self.topic} que el servidor no tenga"
            )
            return
        self.say(
            f"{len(found.keys)} {self.topic} en la terminal que el servidor ya no tiene: "
            "revise la lista; Eliminar los borra de esta caja"
        )
        button.label = f"Eliminar {len(found.keys)}"
        button.disabled = False

    @on(Button.Pressed, "#prune")
    def _prune(self) -> None:
        self.query_one("#prune", Button).disabled = True
        self.say("Eliminando…")
        ctx, topic, keys = self.ctx, self.topic, list(self.keys)
        in_thread(
            self,
            lambda: prune(
                ctx.engine, ctx.settings, topic, apply=True, keys=keys, timeout=PRUNE_TIMEOUT_S
            ),
            self._pruned,
            lambda message: self.say(f"No se eliminó nada: {message}", error=True),
            group="prune",
        )

    def _pruned(self, done: PruneResult) -> None:
        kept = len(self.keys) - done.pruned
        note = f" ({kept} ya no faltaban en el servidor y se conservan)" if kept else ""
        self.app.notify(f"Eliminados {done.pruned} {self.topic}{note}")
        self.dismiss(done.pruned)


class PurgeScreen(ToolScreen):
    """Eliminar Operaciones Sincronizadas: who (user and password, MASTER or ADMIN or the
    permission), what goes (per topic), then the acknowledged operations are deleted and
    the purge logged. Dismisses with how many outbox rows went (None: cancelled)."""

    DEFAULT_CSS = (
        TOOL_CSS.format(name="PurgeScreen")
        + """
    PurgeScreen Input { width: 40; }
    PurgeScreen Label { padding: 1 1 0 0; width: 12; }
    """
    )

    def __init__(self, ctx: WindowContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.grant: Grant | None = None
        self.plan: PurgePlan | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "Eliminar Operaciones Sincronizadas (solo MASTER o ADMIN): borra de esta caja "
                "las operaciones que el servidor confirmó; nunca una pendiente, enviada o "
                "rechazada",
                classes="tool-title",
            )
            with Horizontal():
                yield Label("Usuario")
                yield Input(id="user")
            with Horizontal():
                yield Label("Contraseña")
                yield Input(password=True, id="password")
            with Horizontal():
                yield Label("Antes de")
                yield Input(placeholder="AAAA-MM-DD (vacío: todas)", id="before")
            yield Static("", classes="tool-status")
            yield Static("", id="plan")
            with Horizontal():
                yield Button("Ver qué se elimina", variant="primary", id="check")
                yield Button("Eliminar", variant="error", id="purge", disabled=True)
                yield Button("Cancelar", id="cancel")

    @on(Input.Changed, "#user, #before")
    def _changed(self) -> None:
        """Another user or bound: check again before anything is deleted."""
        self.grant = None
        self.plan = None
        self.query_one("#purge", Button).disabled = True
        self.query_one("#plan", Static).update("")

    @on(Input.Submitted)
    @on(Button.Pressed, "#check")
    def _check(self) -> None:
        user = self.query_one("#user", Input).value.strip()
        password_input = self.query_one("#password", Input)
        password = password_input.value
        password_input.value = ""  # never kept on the screen
        before = self.query_one("#before", Input).value.strip() or None
        if not user:
            self.say("Escriba el usuario (MASTER o ADMIN) y su contraseña", error=True)
            return
        engine, tz = self.ctx.engine, self.ctx.tz

        def check() -> tuple[Grant, PurgePlan]:
            bound = Period.before(before, tz)
            grant = authorise_user(engine, user, password)  # before anything is shown
            return grant, plan_purge(engine, bound)

        self.say("Comprobando…")
        in_thread(
            self,
            check,
            self._planned,
            lambda message: self._refused(message),
            group="purge-check",
            exclusive=True,
        )

    def _refused(self, message: str) -> None:
        self.grant = None
        self.plan = None
        self.query_one("#purge", Button).disabled = True
        self.query_one("#plan", Static).update("")
        self.say(f"No autorizado, nada se elimina: {message}", error=True)

    def _planned(self, checked: tuple[Grant, PurgePlan]) -> None:
        self.grant, self.plan = checked
        plan = self.plan
        self.query_one("#plan", Static).update(Text(describe_plan(plan, self.ctx.tz)))
        button = self.query_one("#purge", Button)
        if not plan.rows:
            self.say(f"{self.grant.user} ({self.grant.role}): nada que eliminar")
            button.disabled = True
            return
        self.say(
            f"{self.grant.user} ({self.grant.role}) puede eliminar {plan.rows} operaciones "
            "confirmadas: revise el detalle y pulse Eliminar"
        )
        button.label = f"Eliminar {plan.rows}"
        button.disabled = False

    @on(Button.Pressed, "#purge")
    def _purge(self) -> None:
        grant, plan = self.grant, self.plan
        if grant is None or plan is None:
            return
        self.query_one("#purge", Button).disabled = True
        self.say("Eliminando…")
        engine = self.ctx.engine
        in_thread(
            self,
            lambda: purge(engine, plan, grant.user, grant.role),
            self._purged,
            lambda message: self.say(f"No se eliminó nada: {message}", error=True),
            group="purge",
        )

    def _purged(self, done: Purge) -> None:
        self.app.notify(
            f"Depuración {done.id}: {done.rows} operaciones confirmadas eliminadas por "
            f"{done.user} (`cajasync tools purges` lista el registro)"
        )
        self.dismiss(done.rows)


def describe_plan(plan: PurgePlan, tz: dt.tzinfo) -> str:
    """What a purge would delete, per topic, in the window's words."""
    bound = "todas las fechas" if plan.before is None else f"antes de {_when(plan.before, tz)}"
    lines = [f"Operaciones confirmadas a eliminar ({bound}): {plan.rows}"]
    lines += [
        f"  {span.topic}: {span.rows} filas, registradas del {_when(span.first, tz)} "
        f"al {_when(span.last, tz)}"
        for span in plan.topics
    ]
    return "\n".join(lines)


def _when(moment: dt.datetime, tz: dt.tzinfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")
