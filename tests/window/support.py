"""Driving the window's parts with Textual's pilot: a small app that mounts one view or
pushes one screen over a real WindowContext, and waiting until its threads are done.

    app = PartApp(view=lambda: make_view(ctx, "ventas"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)

The tests run the coroutine with `asyncio.run` inside ordinary test functions (no
pytest-asyncio).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget

from cajasync.core.db import reading
from cajasync.core.identity import load_identity
from cajasync.core.periods import Period
from cajasync.core.settings import Settings
from cli.window.context import WindowContext
from cli.window.table import VirtualTable

SIZE = (140, 40)
SETTLE_ROUNDS = 200


class PartApp(App[None]):
    """Mounts `view()` (a widget) and pushes `screen()` when given; what the pushed
    screen dismissed with is in `results`."""

    def __init__(
        self,
        view: Callable[[], Widget] | None = None,
        screen: Callable[[], Screen[Any]] | None = None,
    ) -> None:
        super().__init__()
        self._view = view
        self._screen = screen
        self.results: list[object] = []

    def compose(self) -> ComposeResult:
        if self._view is not None:
            yield self._view()

    def on_mount(self) -> None:
        if self._screen is not None:
            self.push_screen(self._screen(), callback=self.results.append)


def context(engine: Engine, settings: Settings, period: Period | None = None) -> WindowContext:
    """A till's window context, dates shown in UTC."""
    with reading(engine) as connection:
        identity = load_identity(connection)
    return WindowContext(
        db=str(engine.url.database),
        engine=engine,
        settings=settings,
        identity=identity,
        tz=dt.UTC,
        period=period or Period(),
    )


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until no worker runs and no table waits for a page (pages are asked for as
    they are drawn, so this takes a few rounds)."""
    app = pilot.app
    for _round in range(SETTLE_ROUNDS):
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        tables = [t for screen in app.screen_stack for t in screen.query(VirtualTable)]
        if not any(t.busy for t in tables) and not any(w.is_running for w in app.workers):
            return
    raise AssertionError("the window did not settle")


def rows_of(table: VirtualTable) -> list[tuple[str, ...]]:
    """The cells of the rows a table holds in its pages (all of them for a short list)."""
    return [row.cells for index in range(table.row_count) if (row := table._cached(index))]
