"""The frame of the synchronizer window: options list, action buttons with their options,
progress and Cancelar, the main area (views.py), the bottom panel (counts on both sides,
the date filter, Comparar registros), the Herramientas menu and the status bar.

What runs where: the first paint shows the options at once; the till's counts are read
in a thread right after it and every LOCAL_EVERY_S (plain COUNTs, so the list moves while
a relay or the change feed works); the server's come from `compare` in a thread after
the first paint, on Actualizar Datos, after every action and every COMPARE_EVERY_S; the
status bar's probe every STATUS_EVERY_S. Actions run one at a time in a thread
(actions.py). Nothing here waits on the network in the event loop, and every failure is
a message in the window, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, overload

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import (
    Button,
    Checkbox,
    Footer,
    Header,
    Input,
    Label,
    OptionList,
    ProgressBar,
    Static,
)
from textual.widgets.option_list import Option

from cajasync.core.db import reading
from cajasync.core.periods import Period, moment
from cajasync.errors import ConfigError, PullCancelled
from cajasync.processes.till_status import pending_counts
from cli.window import status
from cli.window.actions import (
    Progress,
    PullChoice,
    Transmitted,
    cancelled_message,
    explain,
    in_thread,
    pull_message,
    run_pull,
    run_transmit,
    transmit_message,
)
from cli.window.context import CONFIG, PENDING, WindowContext
from cli.window.menu import (
    Counts,
    header,
    is_down,
    is_topic,
    is_up,
    label,
    number,
    options_of,
)
from cli.window.views import OptionView, make_view

if TYPE_CHECKING:  # compare, the pull and the relay load in threads, after the first paint
    from cajasync.processes.pull import PullResult
    from cajasync.processes.questions import Comparison
    from cajasync.processes.terminal import RelayStats

LOCAL_EVERY_S: Final = 2.0
COMPARE_EVERY_S: Final = 30.0
STATUS_EVERY_S: Final = 5.0
PROGRESS_EVERY_S: Final = 0.25
COMPARE_TIMEOUT_S: Final = 10.0
SNAPSHOT_WAIT_S: Final = 20.0  # a snapshot is taken by then, whatever has not answered
QUIT_WAIT_S: Final = 15.0  # how long quitting waits for a cancelled action to stop
KEY_SEPARATORS: Final = re.compile(r"[\s,;]+")
FRAME_ACTIONS: Final = frozenset(
    {
        "pull",
        "transmit",
        "refresh_all",
        "compare",
        "diff",
        "tools",
        "filter",
        "cancel",
        "help",
        "quit",
    }
)
W = TypeVar("W", bound=Widget)


class ToolsMenu(ModalScreen[str | None]):
    """Herramientas: the seed's clean-up tools."""

    DEFAULT_CSS = """
    ToolsMenu { align: center middle; }
    ToolsMenu > Vertical {
        width: 50; height: auto; border: thick $accent; background: $surface; padding: 1 2;
    }
    ToolsMenu Button { width: 100%; margin-bottom: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Volver")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Herramientas", classes="title")
            yield Button("Depurar productos", id="prune-productos")
            yield Button("Depurar clientes", id="prune-clientes")
            yield Button("Borrar operaciones sincronizadas", id="purge", variant="warning")
            yield Button("Volver", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None if event.button.id == "close" else event.button.id)

    def action_close(self) -> None:
        self.dismiss(None)


class KeysFooter(Footer):
    """Textual's footer (the keys), drawn with the frame and redrawn only when the keys it
    shows change. Textual's composes it empty, then again on every change of focus or of the
    bindings: the window's start drew the same keys three times after the first paint, 0.1 s
    spent before the till's counts were shown."""

    _redraw_pending = False
    _drawn: tuple[object, ...] = ()

    def compose(self) -> ComposeResult:
        self._bindings_ready = True  # the frame's bindings are there when it is mounted
        self._drawn = self._keys()
        yield from super().compose()

    def bindings_changed(self, screen: Screen[object]) -> None:
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        if not self._redraw_pending:
            self._redraw_pending = True
            self.call_after_refresh(self._redraw)

    async def _redraw(self) -> None:
        self._redraw_pending = False
        if self._keys() != self._drawn:
            await self.recompose()

    def _keys(self) -> tuple[object, ...]:
        """What `compose` draws: the keys shown, and the command palette's."""
        palette = self.app.COMMAND_PALETTE_BINDING
        return tuple(
            (key, binding, self.app.get_key_display(binding), enabled, tooltip)
            for key, (_node, binding, enabled, tooltip) in self.screen.active_bindings.items()
            if binding.show or key == palette
        )


class SyncWindow(App[None]):
    """`cajasync window`: one till's synchronizer."""

    TITLE = "Sincronizador"
    CSS = """
    #body { height: 1fr; }
    #left { width: 48; border-right: solid $primary-background; }
    #options-header { height: 1; padding: 0 1; }
    #options { height: 1fr; border: none; }
    #right { width: 1fr; }
    #buttons, #pull-options, #filters { height: auto; }
    #buttons Button { margin-right: 1; min-width: 12; }
    #pull-options Checkbox { border: none; height: 1; margin: 1 1 0 0; }
    #pull-options Label, #filters Label { margin: 1 1 0 1; }
    #location { width: 14; }
    #keys { width: 34; }
    #since, #until { width: 16; }
    #progress { height: 3; display: none; }
    #progress.running { display: block; }
    #bar { width: 40; margin: 1 1 0 0; }
    #progress-text { width: 1fr; margin: 1 1 0 0; }
    #main { height: 1fr; border-top: solid $primary-background; }
    #compare { height: auto; border-top: solid $primary-background; }
    #counts { height: 1; padding: 0 1; }
    #hint { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    #message { height: auto; max-height: 2; padding: 0 1; }
    #message.error { color: $error; }
    #message.warning { color: $warning; }
    #statusbar { height: auto; max-height: 2; padding: 0 1; background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "pull", "Obtener datos"),
        Binding("t", "transmit", "Transmitir"),
        Binding("a", "refresh_all", "Actualizar Datos"),
        Binding("r", "compare", "Comparar"),
        Binding("c", "diff", "Comparar registros"),
        Binding("h", "tools", "Herramientas"),
        Binding("f", "filter", "Filtro", show=False),
        Binding("escape", "cancel", "Cancelar", show=False),
        Binding("question_mark", "help", "Ayuda"),
        Binding("q", "quit", "Salir"),
    ]

    def __init__(
        self,
        ctx: WindowContext,
        *,
        snapshot: Path | None = None,
        local_every: float = LOCAL_EVERY_S,
        compare_every: float = COMPARE_EVERY_S,
        status_every: float = STATUS_EVERY_S,
        compare_timeout: float = COMPARE_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.snapshot = snapshot
        self.local_every, self.compare_every = local_every, compare_every
        self.status_every, self.compare_timeout = status_every, compare_timeout
        self.options = options_of(ctx.identity)
        self.option = CONFIG
        self.counts = Counts()
        self.health: status.Health | None = None
        self.views: dict[str, OptionView] = {}
        self.message = ""  # the last message shown (also a notification)
        self.failure: str | None = None  # why a --snapshot could not be written
        self.first_paint_at: float | None = None  # time.monotonic() of each milestone
        self.counted_at: float | None = None
        self.local_reads = 0  # the till's counts read so far
        self.compared_at: float | None = None
        self._compared_at_wall: dt.datetime | None = None
        self._busy: str | None = None  # the running action's title
        self._cancel = threading.Event()
        self._action: threading.Thread | None = None
        self._progress: Progress | None = None
        self._reported: RelayStats | tuple[int, int, int, int] | None = None  # by the thread
        self._in_flight: set[str] = set()  # background reads running (local, compare, status)
        self._snapshot_taken = False

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        identity = self.ctx.identity
        self.sub_title = (
            f"caja {identity.terminal} · ubicación {identity.location} · punto de venta "
            f"{identity.pos} · {identity.kind}"
        )
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield Static(header(), id="options-header")
                yield OptionList(
                    *(Option(self.counts.line(o), id=o) for o in self.options), id="options"
                )
            with Vertical(id="right"):
                with Horizontal(id="buttons"):
                    yield Button("Obtener datos", id="pull", variant="primary")
                    yield Button("Transmitir", id="transmit", variant="primary")
                    yield Button("Actualizar Datos", id="refresh-all")
                    yield Button("Herramientas", id="tools")
                    yield Button("Ayuda", id="help")
                with Horizontal(id="pull-options"):
                    yield Checkbox("Incluir Imágenes", id="images")
                    yield Checkbox("sincronizar los productos del combo", id="combo-products")
                    yield Label("Ubicación", id="location-label")
                    yield Input(value=identity.location, id="location")
                    yield Label("Clientes", id="keys-label")
                    yield Input(placeholder="claves: C0001, C0002 (vacío: todos)", id="keys")
                    yield Checkbox("completo", id="full")
                with Horizontal(id="progress"):
                    yield ProgressBar(id="bar", show_eta=False)
                    yield Static(id="progress-text")
                    yield Button("Cancelar", id="cancel", variant="error")
                with Container(id="main"):
                    yield self._new_view(CONFIG)
                with Vertical(id="compare"):
                    with Horizontal(id="filters"):
                        yield Label("Desde")
                        yield Input(placeholder="AAAA-MM-DD", id="since")
                        yield Label("Hasta")
                        yield Input(placeholder="AAAA-MM-DD", id="until")
                        yield Button("Aplicar", id="apply")
                        yield Button("Comparar registros", id="diff")
                    yield Static(id="counts")
                    yield Static(id="hint")
                    yield Static(id="message")
        yield Static(status.render(None, 0, None, self.ctx.tz), id="statusbar")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.call_after_refresh(self._painted)
        self._show_option()
        self.frame("#options", OptionList).focus()
        self.set_interval(self.local_every, self.refresh_local)
        self.set_interval(self.compare_every, self.refresh_compare)
        self.set_interval(self.status_every, self.refresh_status)
        self.set_interval(1.0, self._tick)
        self.set_interval(PROGRESS_EVERY_S, lambda: self._closing_quietly(self._show_progress))
        if self.snapshot is not None:
            self.set_timer(SNAPSHOT_WAIT_S, self._take_snapshot)

    def _painted(self) -> None:
        """After the first paint: the till's counts first; compare (which reads every key
        of the replica to count it) and the status probe once they are shown."""
        self.first_paint_at = time.monotonic()
        self.refresh_local()

    @overload
    def frame(self, selector: str) -> Widget: ...

    @overload
    def frame(self, selector: str, expect_type: type[W]) -> W: ...

    def frame(self, selector: str, expect_type: type[Widget] = Widget) -> Widget:
        """A widget of the window's own screen (whatever screen is on top of it)."""
        return self.screen_stack[0].query_one(selector, expect_type)

    # -- background reads --------------------------------------------------------------------

    def post(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback(*args)` on the window's loop from a thread (nothing once closed)."""
        if not self.is_running:
            return
        with contextlib.suppress(RuntimeError):  # the window closed meanwhile
            self.call_from_thread(self._closing_quietly, callback, *args)

    def _closing_quietly(self, callback: Callable[..., Any], *args: Any) -> None:
        """`callback(*args)`, unless the window's widgets are going away (it is closing)."""
        with contextlib.suppress(NoMatches):
            callback(*args)

    def _background(
        self,
        name: str,
        work: Callable[[], Any],
        done: Callable[[Any], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        """One read of `name` at a time in a thread; its result handled on the loop."""
        if name in self._in_flight:
            return
        self._in_flight.add(name)

        def finish(handler: Callable[[Any], None]) -> Callable[[Any], None]:
            def run(value: Any) -> None:
                self._in_flight.discard(name)
                handler(value)

            return run

        in_thread(name, work, finish(done), finish(failed), self.post)

    def refresh_local(self) -> None:
        """Re-read the till's counts (every topic, and the pending operations)."""
        period = self.ctx.period

        def work() -> tuple[Period, dict[str, int], int]:
            from cajasync.processes.questions import local_counts

            counts = local_counts(self.ctx.engine, period)
            with reading(self.ctx.engine) as connection:
                pending, _oldest = pending_counts(connection)
            return period, counts, sum(pending.values())

        self._background("local", work, self._local_read, self._local_failed)

    def _local_read(self, read: tuple[Period, dict[str, int], int]) -> None:
        period, local, pending = read
        if period != self.ctx.period:
            self.refresh_local()  # the filter changed meanwhile
            return
        self.counts.local, self.counts.pending = local, pending
        self.local_reads += 1
        self._show_counts()
        if self.counted_at is None:
            self.counted_at = time.monotonic()
            self.refresh_compare()
            self.refresh_status()
        self._maybe_snapshot()

    def _local_failed(self, error: BaseException) -> None:
        self.say(f"no se pudieron leer los conteos de la caja: {explain(error)}", "error")
        if self.compared_at is None:  # the server's side and the status all the same
            self.refresh_compare()
            self.refresh_status()

    def refresh_compare(self) -> None:
        """Ask the server for its counts (`cajasync compare`) under the date filter."""
        period = self.ctx.period

        def work() -> tuple[Period, Comparison]:
            from cajasync.processes.questions import compare

            return period, compare(
                self.ctx.engine,
                self.ctx.settings,
                None,
                period,
                timeout=self.compare_timeout,
                db=self.ctx.db,
            )

        self._background("compare", work, self._compared, self._compare_failed)

    def _compared(self, answer: tuple[Period, Comparison]) -> None:
        period, comparison = answer
        if period != self.ctx.period:
            self.refresh_compare()
            return
        self.counts.comparison, self.counts.compare_error = comparison, None
        self.counts.compared_local = dict(self.counts.local or {})
        self._compare_done()

    def _compare_failed(self, error: BaseException) -> None:
        self.counts.comparison, self.counts.compare_error = None, explain(error)
        self._compare_done()

    def _compare_done(self) -> None:
        self.compared_at = time.monotonic()
        self._compared_at_wall = dt.datetime.now(dt.UTC)
        self._show_counts()
        self._show_status()
        self._maybe_snapshot()

    def refresh_status(self) -> None:
        """Probe the broker, the relay and the till's status (status.py)."""
        self._background("status", lambda: status.probe(self.ctx), self._probed, self._probe_failed)

    def _probed(self, health: status.Health) -> None:
        was = self.health
        self.health = health
        if health.broker_error is not None and (was is None or was.broker_error is None):
            self.say(f"sin conexión con el broker: {health.broker_error}", "error")
        elif health.broker_error is None and was is not None and was.broker_error is not None:
            self.say("conexión con el broker restablecida")
        self._show_status()
        self._maybe_snapshot()

    def _probe_failed(self, error: BaseException) -> None:
        self.say(f"no se pudo leer el estado de la caja: {explain(error)}", "error")

    def _tick(self) -> None:
        """Once a second: the ages in the status bar."""
        self._closing_quietly(self._show_status)

    # -- showing -----------------------------------------------------------------------------

    def say(self, text: str, severity: str = "information") -> None:
        """A message in the window: the bottom panel's line and a notification."""
        self.message = text
        line = self.frame("#message", Static)
        line.update(Text(text))
        line.set_class(severity == "error", "error")
        line.set_class(severity == "warning", "warning")
        self.notify(text, severity=severity, timeout=8)  # type: ignore[arg-type]

    def _show_counts(self) -> None:
        options = self.frame("#options", OptionList)
        for option in self.options:
            options.replace_option_prompt(option, self.counts.line(option))
        self._show_panel()

    def _show_panel(self) -> None:
        """The bottom panel: the selected option's counts on both sides and the hint."""
        option, counts = self.option, self.counts
        here = counts.terminal(option)
        line = Text(f"{label(option)}: ", style="bold")
        line.append(f"caja {'…' if here is None else number(here)}")
        line.append(f" · servidor {counts.server(option)}")
        if counts.differs(option):
            line.append("  ≠ difieren", style="bold red")
        elif counts.server_row(option) is not None and here is not None:
            line.append("  = iguales", style="green")
        line.append(f" · {self._period_text()}", style="dim")
        self.frame("#counts", Static).update(line)
        self.frame("#hint", Static).update(self._hint())

    def _hint(self) -> Text:
        counts, option = self.counts, self.option
        if option == PENDING:
            return Text("operaciones que el servidor aún no acusó: Transmitir las envía")
        if counts.compare_error is not None:
            return Text(f"servidor no responde: {counts.compare_error}", style="bold red")
        row = counts.server_row(option)
        if row is None:
            return Text("esperando la respuesta del servidor…", style="dim")
        when = ""
        if self._compared_at_wall is not None:
            when = self._compared_at_wall.astimezone(self.ctx.tz).strftime("%H:%M:%S")
        states = ", ".join(f"{n} {state}" for state, n in sorted(row.states.items()))
        text = Text(f"comparado a las {when}" + (f" · en la caja: {states}" if states else ""))
        if row.hint:
            text.append(f"\n{row.hint}", style="yellow")
        return text

    def _period_text(self) -> str:
        period = self.ctx.period
        if period.open:
            return "todas las fechas"
        fmt = "%Y-%m-%d %H:%M"
        since = period.since.astimezone(self.ctx.tz).strftime(fmt) if period.since else "el inicio"
        until = period.until.astimezone(self.ctx.tz).strftime(fmt) if period.until else "ahora"
        return f"desde {since} hasta {until}"

    def _show_status(self) -> None:
        own = 1 if self._busy is not None else 0
        line = status.render(self.health, own, self.counts.comparison, self.ctx.tz)
        self.frame("#statusbar", Static).update(line)

    def _show_progress(self) -> None:
        """The running action's progress as its thread last reported it (the thread only
        sets `_reported`: it never waits for the window to draw)."""
        progress, reported = self._progress, self._reported
        if progress is None:
            return
        if isinstance(reported, tuple):  # a pull's (records, bytes, images, image bytes)
            records, nbytes, images, image_bytes = reported
            progress.done, progress.bytes = records, nbytes + image_bytes
            progress.images, progress.image_bytes = images, image_bytes
        elif reported is not None:  # Transmitir's relay counters
            if reported.acked != progress.done:
                self.refresh_local()  # receipts arrived: the pending counts moved
            progress.done = reported.acked
            progress.extra = f"{number(reported.confirmed)} enviadas"
        bar = self.frame("#bar", ProgressBar)
        bar.update(total=progress.total, progress=progress.done)
        text = progress.describe()
        if self._cancel.is_set():
            text = "cancelando… " + text
        self.frame("#progress-text", Static).update(f"{self._busy}: {text}")

    # -- the selected option -----------------------------------------------------------------

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None and event.option.id != self.option:
            self._select(event.option.id)

    def _select(self, option: str) -> None:
        self.option = option
        self._show_view(option)
        self._show_option()

    def _show_option(self) -> None:
        """The buttons, the pull options and the bottom panel of the selected option."""
        self._enable()
        self._show_pull_options()
        self._show_panel()

    def _show_view(self, option: str) -> None:
        main = self.frame("#main", Container)
        for shown, other in self.views.items():
            other.display = shown == option
        view = self.views.get(option)
        if view is None:
            main.mount(self._new_view(option))
        else:
            view.reload()

    def _new_view(self, option: str) -> OptionView:
        """The view of `option`, kept for when it is selected again (it reads on mount)."""
        self.views[option] = view = make_view(self.ctx, option)
        return view

    def _enable(self) -> None:
        busy = self._busy is not None
        self.frame("#pull", Button).disabled = busy or not is_down(self.option)
        self.frame("#transmit", Button).disabled = busy or not is_up(self.option)
        self.frame("#refresh-all", Button).disabled = busy
        self.frame("#tools", Button).disabled = busy
        self.frame("#diff", Button).disabled = not is_topic(self.option)
        self.frame("#cancel", Button).disabled = not busy

    def _show_pull_options(self) -> None:
        option = self.option
        self.frame("#pull-options").display = is_down(option)
        self.frame("#images").display = option == "productos"
        self.frame("#combo-products").display = option == "combos"
        for name in ("#location-label", "#location"):
            self.frame(name).display = option == "stock"
        for name in ("#keys-label", "#keys"):
            self.frame(name).display = option == "clientes"

    # -- buttons, keys and the mouse ---------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        handlers: dict[str | None, Callable[[], Any]] = {
            "pull": self.action_pull,
            "transmit": self.action_transmit,
            "refresh-all": self.action_refresh_all,
            "tools": self.action_tools,
            "help": self.action_help,
            "cancel": self.action_cancel,
            "apply": self.apply_filter,
            "diff": self.action_diff,
        }
        handler = handlers.get(event.button.id)
        if handler is not None:
            handler()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("since", "until"):
            self.apply_filter()

    def on_click(self, event: events.Click) -> None:
        """A right click on the options or the main area: Comparar registros."""
        if event.button != 3 or event.widget is None:
            return
        areas = (self.frame("#options"), self.frame("#main"))
        if any(_within(event.widget, area) for area in areas):
            highlighted = self.frame("#options", OptionList).highlighted_option
            if highlighted is not None and highlighted.id is not None:
                self._select(highlighted.id)
            self.action_diff()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The frame's keys work on the frame only (not under a screen on top of it), and
        letters typed into the filter or the pull options are text, not commands."""
        if action not in FRAME_ACTIONS:
            return True
        if len(self.screen_stack) > 1:
            return False
        return action == "cancel" or not isinstance(self.focused, Input)

    def action_help(self) -> None:
        # imported when first opened: kept out of the window's start
        from cli.window.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        self.frame("#since", Input).focus()

    def action_compare(self) -> None:
        self.say("Comparar: contando en la caja y en el servidor…")
        self.refresh_local()
        self.refresh_compare()

    def action_diff(self) -> None:
        if not is_topic(self.option):
            self.say("Comparar registros es por tema: elegí Ventas, Productos u otro", "warning")
            return
        # imported when first opened: kept out of the window's start
        from cli.window.records import DiffScreen

        self.push_screen(DiffScreen(self.ctx, self.option))

    def action_tools(self) -> None:
        if self._busy is not None:
            self.say(f"espere a que termine {self._busy} (o Cancelar)", "warning")
            return
        self.push_screen(ToolsMenu(), self._tool_chosen)

    def _tool_chosen(self, choice: str | None) -> None:
        if choice is None:
            return
        # imported when first opened: kept out of the window's start
        from cli.window.tools import PruneScreen, PurgeScreen

        if choice == "purge":
            self.push_screen(PurgeScreen(self.ctx), self._purged)
        else:
            topic = choice.removeprefix("prune-")
            self.push_screen(PruneScreen(self.ctx, topic), lambda n: self._pruned(topic, n))

    def _pruned(self, topic: str, removed: int | None) -> None:
        if removed is not None:
            self.say(f"Depurar {label(topic)}: {number(removed)} registros quitados")
        self._after_change()

    def _purged(self, deleted: int | None) -> None:
        if deleted is not None:
            self.say(f"Borrar operaciones sincronizadas: {number(deleted)} operaciones borradas")
        self._after_change()

    def _after_change(self) -> None:
        """After an action or a tool: every count and the view read again."""
        self.refresh_local()
        self.refresh_compare()
        self.refresh_status()
        view = self.views.get(self.option)
        if view is not None:
            view.reload()

    # -- the date filter ---------------------------------------------------------------------

    def apply_filter(self) -> None:
        since = self.frame("#since", Input).value.strip() or None
        until = self.frame("#until", Input).value.strip() or None
        try:
            if since:
                moment(since, self.ctx.tz, name="desde")
            if until:
                moment(until, self.ctx.tz, name="hasta")
            period = Period.parse(since, until, self.ctx.tz)
        except ConfigError as exc:
            self.say(f"filtro de fechas: {exc}", "error")
            return
        if period == self.ctx.period:
            return
        self.ctx.period = period
        self.say(f"filtro: {self._period_text()}")
        self.counts.comparison, self.counts.compare_error = None, None
        self._after_change()
        self._show_panel()

    # -- actions -----------------------------------------------------------------------------

    def action_pull(self) -> None:
        """Obtener datos for the selected option, with the options that apply to it."""
        if not is_down(self.option):
            self.say("Obtener datos es para Configuración y los temas que bajan", "warning")
            return
        option = self.option
        keys: tuple[str, ...] = ()
        if option == "clientes":
            typed = self.frame("#keys", Input).value
            keys = tuple(key for key in KEY_SEPARATORS.split(typed) if key)
        location = None
        if option == "stock":
            location = self.frame("#location", Input).value.strip() or None
        choice = PullChoice(
            [option],
            images=option == "productos" and self.frame("#images", Checkbox).value,
            combo_products=option == "combos" and self.frame("#combo-products", Checkbox).value,
            location=location,
            keys=keys,
            full=self.frame("#full", Checkbox).value,
        )
        self._start_pull(choice)

    def action_refresh_all(self) -> None:
        """Actualizar Datos: every topic's changes, then compare."""
        self._start_pull(PullChoice(None))

    def _start_pull(self, choice: PullChoice) -> None:
        progress = Progress("registros", total=self._expected(choice))
        if not self._begin(choice.title(), progress):
            return
        cancel = self._cancel

        def on_progress(records: int, nbytes: int, images: int, image_bytes: int) -> None:
            self._reported = (records, nbytes, images, image_bytes)  # shown by the loop's tick

        self._action = in_thread(
            "pull",
            lambda: run_pull(self.ctx, choice, cancel, on_progress),
            lambda result: self._pull_done(choice, result),
            lambda error: self._action_failed(choice.title(), error),
            self.post,
        )

    def _expected(self, choice: PullChoice) -> int | None:
        """Records a pull will bring, when known: a whole snapshot (or the first pull of a
        topic) brings what the server holds; a refresh, only the changes (unknown)."""
        comparison = self.counts.comparison
        if comparison is None or choice.topics is None or choice.keys or choice.location:
            return None
        total = 0
        for topic in choice.topics:
            row = self.counts.server_row(topic)
            if row is None or not (choice.full or row.terminal == 0):
                return None
            total += row.server
        return total or None

    def _pull_done(self, choice: PullChoice, result: PullResult) -> None:
        self._end()
        self.say(pull_message(choice, result))
        self._after_change()

    def action_transmit(self) -> None:
        """Transmitir: what is pending goes up now; the server's receipts are applied."""
        if not is_up(self.option):
            self.say(
                "Transmitir es para Ventas, Pagos, Cierre Z, Archivo Semanal y "
                "Operaciones Pendientes",
                "warning",
            )
            return
        progress = Progress("acusadas", total=self.counts.pending or None)
        if not self._begin("Transmitir", progress):
            return
        cancel = self._cancel

        def on_progress(stats: RelayStats) -> None:
            self._reported = stats  # shown by the loop's tick

        self._action = in_thread(
            "transmit",
            lambda: run_transmit(self.ctx, cancel, on_progress),
            self._transmit_done,
            lambda error: self._action_failed("Transmitir", error),
            self.post,
        )

    def _transmit_done(self, done: Transmitted) -> None:
        self._end()
        self.say(transmit_message(done), "warning" if done.cancelled else "information")
        self._after_change()

    def _action_failed(self, title: str, error: BaseException) -> None:
        self._end()
        if isinstance(error, PullCancelled):
            self.say(cancelled_message(title, error.records, error.images), "warning")
        else:
            self.say(f"{title}: {explain(error)}", "error")
        self._after_change()

    def _begin(self, title: str, progress: Progress) -> bool:
        if self._busy is not None:
            self.say(f"ya está en curso: {self._busy} (Cancelar para detenerlo)", "warning")
            return False
        self._busy, self._progress, self._reported = title, progress, None
        self._cancel = threading.Event()
        self.frame("#progress").add_class("running")
        self._enable()
        self._show_progress()
        self._show_status()
        return True

    def _end(self) -> None:
        self._show_progress()  # what the thread reported last, for the message
        self._busy, self._progress, self._action = None, None, None
        self.frame("#progress").remove_class("running")
        self._enable()
        self._show_status()

    def action_cancel(self) -> None:
        """Cancelar: stop the running action; what arrived stays applied."""
        if self._busy is None:
            return
        self._cancel.set()
        self._show_progress()

    async def action_quit(self) -> None:
        """Close the window; a running action is cancelled and waited for first."""
        action = self._action
        if action is not None and action.is_alive():
            self._cancel.set()
            self.say("cancelando la acción en curso antes de salir…", "warning")
            await asyncio.to_thread(action.join, QUIT_WAIT_S)
        self.exit()

    # -- --snapshot --------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        """With --snapshot: once the counts on both sides and the status are in."""
        loaded = self.counted_at is not None and self.compared_at is not None
        if self.snapshot is not None and loaded and self.health is not None:
            self.call_later(self._take_snapshot)

    async def _take_snapshot(self) -> None:
        if self.snapshot is None or self._snapshot_taken:
            return
        self._snapshot_taken = True
        with contextlib.suppress(asyncio.TimeoutError):  # the views' own reads, bounded
            await asyncio.wait_for(self.workers.wait_for_complete(), SNAPSHOT_WAIT_S)
        self._show_status()
        await asyncio.sleep(0.1)  # one more refresh: what the views just read is drawn
        try:
            self.snapshot.write_text(self.export_screenshot(title=self.sub_title))
        except OSError as exc:
            self.failure = f"cannot write the snapshot {self.snapshot}: {exc}"
        self.exit()


def _within(widget: Widget, area: Widget) -> bool:
    node: Any = widget
    while node is not None:
        if node is area:
            return True
        node = node.parent
    return False
