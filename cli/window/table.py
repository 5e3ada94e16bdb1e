"""A table over rows it never holds all of, and work that runs off the screen's thread.

`VirtualTable` knows how many rows its source holds and asks it only for the pages it
shows (`PAGE_SIZE` rows from an offset), keeping a few of them (`CACHE_PAGES`). It draws
with Textual's line API (`ScrollView.render_line`): one line per visible row, never a
widget per row or cell, so 100,000 rows scroll as 100 do. A page not read yet shows "…"
while a thread reads it; the screen never waits for the database or the broker.

    table = VirtualTable([Column("Clave"), Column("Precio", right=True)], source)
    table.reload()                    # after a filter changed: count and first page again

`Confirm` asks yes or no before anything is changed or deleted.

`in_thread` runs any slow call (a question to the server, a diff, a purge) in a Textual
thread worker and hands its result, or the failure in one line, back on the screen's
thread: never a traceback on the screen.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.dom import DOMNode
from textual.geometry import Size
from textual.message import Message
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Button, Static
from textual.worker import Worker, get_current_worker

from cajasync.errors import CajasyncError

log = logging.getLogger(__name__)

PAGE_SIZE = 100
CACHE_PAGES = 8
MAX_WIDTH = 40  # a column sized from its cells is at most this wide
LOADING = "…"
T = TypeVar("T")


# -- work off the screen's thread ----------------------------------------------------------


def failure_text(exc: BaseException) -> str:
    """An error in one line for the screen: a cajasync error says what to do already."""
    if isinstance(exc, CajasyncError):
        return str(exc)
    return f"error inesperado ({type(exc).__name__}: {exc}); el registro tiene el detalle"


def in_thread(
    node: DOMNode,
    work: Callable[[], T],
    done: Callable[[T], None],
    failed: Callable[[str], None],
    *,
    group: str = "default",
    exclusive: bool = False,
) -> Worker[None]:
    """Run `work` in a thread worker of `node`; `done(result)` or `failed(message)` then
    run on the screen's thread (not at all once the worker was cancelled)."""

    def run() -> None:
        worker = get_current_worker()
        try:
            result = work()
        except Exception as exc:  # every failure becomes a line on the screen
            if not isinstance(exc, CajasyncError):
                log.exception("window: %s failed", group)
            _back(node, worker, failed, failure_text(exc))
        else:
            _back(node, worker, done, result)

    return node.run_worker(run, thread=True, group=group, exclusive=exclusive, exit_on_error=False)


def _back(node: DOMNode, worker: Worker[None], callback: Callable[[T], None], value: T) -> None:
    if worker.is_cancelled:
        return
    try:
        node.app.call_from_thread(callback, value)
    except RuntimeError:  # the window closed meanwhile
        log.debug("window closed before %s finished", worker.group)


# -- rows and where they come from ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its title, its width (0: sized from the first page) and alignment."""

    title: str
    width: int = 0
    right: bool = False


@dataclass(frozen=True, slots=True)
class TableRow:
    """One row: its key, its cells, the operations it stands for (a weekly file: all its
    chunks) and what it was made from."""

    key: str
    cells: tuple[str, ...]
    op_ids: tuple[str, ...] = ()
    item: object = None


@dataclass(frozen=True, slots=True)
class Page:
    """A page of rows, how many rows the source holds in all, and a note to show."""

    total: int
    rows: list[TableRow]
    note: str = ""


class RowSource:
    """Where a table's rows come from; called in a thread, one page at a time."""

    def fetch(self, offset: int, limit: int) -> Page:
        raise NotImplementedError

    def enrich(self, offset: int, page: Page) -> Page | None:
        """The page again with what a slower source adds (the server's column), or None."""
        return None


class ListSource(RowSource):
    """Rows already in memory (a diff's keys, a prune's list)."""

    def __init__(self, rows: Sequence[TableRow], note: str = "") -> None:
        self.rows = list(rows)
        self.note = note

    def fetch(self, offset: int, limit: int) -> Page:
        return Page(len(self.rows), self.rows[offset : offset + limit], self.note)


# -- the table -----------------------------------------------------------------------------


class VirtualTable(ScrollView, can_focus=True):
    """Rows of a `RowSource`, a page at a time, with a cursor row and (when `selectable`)
    rows marked with space."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Arriba", show=False),
        Binding("down", "move(1)", "Abajo", show=False),
        Binding("pageup", "page(-1)", "Pág. arriba", show=False),
        Binding("pagedown", "page(1)", "Pág. abajo", show=False),
        Binding("home", "first", "Inicio", show=False),
        Binding("end", "last", "Fin", show=False),
        Binding("space", "mark", "Marcar"),
        Binding("enter", "choose", "Abrir"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "virtual-table--header",
        "virtual-table--cursor",
        "virtual-table--selected",
        "virtual-table--loading",
    }
    DEFAULT_CSS = """
    VirtualTable { height: 1fr; }
    VirtualTable > .virtual-table--header { text-style: bold; background: $panel; }
    VirtualTable > .virtual-table--cursor { background: $accent 40%; }
    VirtualTable:focus > .virtual-table--cursor { background: $accent; }
    VirtualTable > .virtual-table--selected { color: $warning; text-style: bold; }
    VirtualTable > .virtual-table--loading { color: $text-muted; }
    """

    class Chosen(Message):
        """Enter (or a double click) on a row."""

        def __init__(self, table: VirtualTable, row: TableRow) -> None:
            super().__init__()
            self.table = table
            self.row = row

    class Loaded(Message):
        """A page arrived: the total and the source's note may have changed."""

        def __init__(self, table: VirtualTable, total: int, note: str) -> None:
            super().__init__()
            self.table = table
            self.total = total
            self.note = note

    class Failed(Message):
        """A page could not be read: why, in one line."""

        def __init__(self, table: VirtualTable, message: str) -> None:
            super().__init__()
            self.table = table
            self.message = message

    def __init__(
        self,
        columns: Sequence[Column],
        source: RowSource,
        *,
        selectable: bool = False,
        autoload: bool = True,
        page_size: int = PAGE_SIZE,
        cache_pages: int = CACHE_PAGES,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = list(columns)
        self.source = source
        self.selectable = selectable
        self.autoload = autoload  # read the first page on mount (else: the owner reloads)
        self.page_size = page_size
        self.cache_pages = cache_pages
        self.row_count = 0
        self.cursor = 0
        self.note = ""
        self.loaded = False  # the first page arrived
        self.fetched_rows = 0  # rows read from the source (enrichments not counted)
        self.selected: dict[str, TableRow] = {}
        self._pages: OrderedDict[int, list[TableRow]] = OrderedDict()
        self._loading: set[int] = set()
        self._wanted: set[int] = set()
        self._generation = 0
        self._widths = [column.width for column in self.columns]

    # -- reading ----------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.autoload:
            self.reload()

    def reload(self, source: RowSource | None = None, *, keep_cursor: bool = False) -> None:
        """Forget every page and read again (from `source` when given): after a filter
        changed or an action ran. The marks are dropped (their rows may be gone)."""
        if source is not None:
            self.source = source
        self._generation += 1
        self._pages.clear()
        self._loading.clear()
        self._wanted.clear()
        self.selected.clear()
        self.loaded = False
        if not keep_cursor:
            self.cursor = 0
            self.scroll_to(0, 0, animate=False)
        self._fetch(self.cursor // self.page_size)
        self.refresh()

    @property
    def busy(self) -> bool:
        """A page is being read."""
        return bool(self._loading or self._wanted)

    @property
    def current_row(self) -> TableRow | None:
        """The row under the cursor, when its page is held."""
        return self._cached(self.cursor)

    def selected_rows(self) -> list[TableRow]:
        return list(self.selected.values())

    def _cached(self, index: int) -> TableRow | None:
        page, at = divmod(index, self.page_size)
        rows = self._pages.get(page)
        if rows is None or at >= len(rows):
            return None
        self._pages.move_to_end(page)
        return rows[at]

    def _row_at(self, index: int) -> TableRow | None:
        row = self._cached(index)
        if row is None:
            page = index // self.page_size
            if page not in self._loading and page not in self._wanted:
                if not self._wanted:
                    self.call_later(self._fetch_wanted)
                self._wanted.add(page)
        return row

    def _fetch_wanted(self) -> None:
        """Read the wanted pages still on screen (a fast scroll passes many by)."""
        wanted, self._wanted = self._wanted, set()
        for page in sorted(wanted):
            if self._on_screen(page) and page not in self._pages:
                self._fetch(page)

    def _on_screen(self, page: int) -> bool:
        first = round(self.scroll_offset.y)
        last = first + max(self.size.height - 1, 1) - 1
        return page * self.page_size <= last and (page + 1) * self.page_size > first

    def _fetch(self, page: int) -> None:
        if page in self._loading:
            return
        self._loading.add(page)
        generation, source, offset = self._generation, self.source, page * self.page_size

        def work() -> None:
            first = source.fetch(offset, self.page_size)
            _back_page(self, generation, page, first, fresh=True)
            more = source.enrich(offset, first)
            if more is not None:
                _back_page(self, generation, page, more, fresh=False)

        in_thread(self, work, lambda _none: None, self._failed, group=f"page-{id(self)}")

    def deliver(self, generation: int, page: int, data: Page, *, fresh: bool) -> None:
        """A page read in a thread, on the screen's thread (dropped if the table reloaded)."""
        if generation != self._generation:
            return
        self._loading.discard(page)
        self._pages[page] = data.rows
        self._pages.move_to_end(page)
        while len(self._pages) > self.cache_pages:
            self._pages.popitem(last=False)
        if fresh:
            self.fetched_rows += len(data.rows)
        if not any(self._widths) or not self.loaded:
            self._size_columns(data.rows)
        self.loaded = True
        self.note = data.note
        if data.total != self.row_count:
            self.row_count = data.total
            self.cursor = max(0, min(self.cursor, self.row_count - 1))
        self.virtual_size = Size(self._line_width(), self.row_count + 1)
        self.refresh()
        self.post_message(self.Loaded(self, self.row_count, self.note))

    def _failed(self, message: str) -> None:
        self._loading.clear()
        self.loaded = True
        self.note = message
        self.refresh()
        self.post_message(self.Failed(self, message))

    def _size_columns(self, rows: list[TableRow]) -> None:
        for index, column in enumerate(self.columns):
            if column.width:
                continue
            cells = [len(row.cells[index]) for row in rows if index < len(row.cells)]
            self._widths[index] = max(3, min(MAX_WIDTH, max([len(column.title), *cells])))

    def _line_width(self) -> int:
        gutter = 2 if self.selectable else 0
        return gutter + sum(width + 1 for width in self._widths)

    # -- drawing ----------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if y == 0:
            header = self.get_component_rich_style("virtual-table--header")
            titles = tuple(column.title for column in self.columns)
            return self._strip(titles, "  " if self.selectable else "", base + header, scroll_x)
        index = round(scroll_y) + y - 1
        if index >= self.row_count:
            if index == 0:
                loading = self.get_component_rich_style("virtual-table--loading")
                text = " (nada que mostrar)" if self.loaded else " Cargando…"
                return Strip([Segment(set_cell_size(text, width), base + loading)])
            return Strip.blank(width, base)
        row = self._row_at(index)
        style = base
        if row is None:
            style += self.get_component_rich_style("virtual-table--loading")
            cells: tuple[str, ...] = (LOADING,)
            mark = "  " if self.selectable else ""
        else:
            cells = row.cells
            marked = row.key in self.selected
            mark = ("● " if marked else "  ") if self.selectable else ""
            if marked:
                style += self.get_component_rich_style("virtual-table--selected")
        if index == self.cursor:
            style += self.get_component_rich_style("virtual-table--cursor")
        return self._strip(cells, mark, style, scroll_x)

    def _strip(self, cells: tuple[str, ...], mark: str, style: Style, scroll_x: int) -> Strip:
        parts = [mark]
        for index, width in enumerate(self._widths or [0]):
            text = cells[index] if index < len(cells) else ""
            right = index < len(self.columns) and self.columns[index].right
            fitted = set_cell_size(text, width) if not right else text[-width:].rjust(width)
            parts.append(fitted + " ")
        line = "".join(parts)
        strip = Strip([Segment(line, style)])
        width = self.size.width
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    # -- moving -----------------------------------------------------------------------

    @property
    def _visible_rows(self) -> int:
        return max(self.size.height - 1, 1)

    def move_cursor(self, row: int) -> None:
        """Put the cursor on `row` (kept within the rows) and scroll it into view."""
        if self.row_count == 0:
            return
        self.cursor = max(0, min(row, self.row_count - 1))
        top = round(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + self._visible_rows:
            self.scroll_to(y=self.cursor - self._visible_rows + 1, animate=False)
        self.refresh()

    def action_move(self, step: int) -> None:
        self.move_cursor(self.cursor + step)

    def action_page(self, step: int) -> None:
        self.move_cursor(self.cursor + step * self._visible_rows)

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(self.row_count - 1)

    def action_mark(self) -> None:
        row = self.current_row
        if not self.selectable or row is None:
            return
        if self.selected.pop(row.key, None) is None:
            self.selected[row.key] = row
        self.refresh()

    def action_choose(self) -> None:
        row = self.current_row
        if row is not None:
            self.post_message(self.Chosen(self, row))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        index = round(self.scroll_offset.y) + offset.y - 1
        if index < self.row_count:
            self.move_cursor(index)
            if event.chain >= 2:
                self.action_choose()


def _back_page(table: VirtualTable, generation: int, page: int, data: Page, *, fresh: bool) -> None:
    """Hand a page read in a thread to the table, on the screen's thread."""
    worker = get_current_worker()
    if worker.is_cancelled:
        return
    try:
        table.app.call_from_thread(table.deliver, generation, page, data, fresh=fresh)
    except RuntimeError:
        log.debug("window closed before a page arrived")


# -- yes or no -----------------------------------------------------------------------------


class Confirm(ModalScreen[bool]):
    """A question before an action: dismisses True only on the action's button."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "no", "Cancelar")]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical { width: 64; height: auto; border: thick $warning; padding: 1 2;
                         background: $surface; }
    Confirm Horizontal { height: auto; margin-top: 1; }
    Confirm Button { margin-right: 2; }
    """

    def __init__(self, question: str, action: str) -> None:
        super().__init__()
        self.question = question
        self.action = action

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question)
            with Horizontal():
                yield Button(self.action, variant="warning", id="yes")
                yield Button("Cancelar", id="no")

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def action_no(self) -> None:
        self.dismiss(False)
