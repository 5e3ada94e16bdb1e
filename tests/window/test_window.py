"""The synchronizer window's frame, driven with Textual's pilot against the real broker and
a server (`serve` in a thread, as the down-flow tests run it): the options and their
counts on both sides, Obtener datos with images, Transmitir, Cancelar, the date filter,
an unreachable broker, the help screen, Herramientas, right click, `--snapshot`.

Each module run gets a private vhost; no test measures time: every wait polls a
condition (the window's own state, read on its loop) with a generous timeout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from textual.pilot import Pilot
from textual.widgets import Button, Input, OptionList

from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, images, outbox, pulls, replica
from cajasync.samples.seed import seed_catalog
from cli.window.app import SyncWindow, ToolsMenu
from cli.window.context import PENDING, WindowContext
from cli.window.help import HelpScreen
from cli.window.menu import number
from cli.window.records import DiffScreen
from cli.window.tools import PurgeScreen
from inbox.replica import ABANDONED
from inbox.replica_api import Replica
from outbox.record import record
from tests.integration.down_support import (
    Server,
    Terminal,
    make_server,
    make_terminal,
    purge,
    purge_terminal_queue,
)
from tests.integration.relay_support import sale
from tests.waiting import WAIT_S, wait_for

pytestmark = pytest.mark.rabbitmq

PRODUCTS = 30  # each with its own image
BIG_CATALOG = 30_000  # 30 snapshot pages: a pull still streaming when Cancelar is pressed
SIZE = (132, 40)
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, window_settings: Settings, window_url: str) -> Iterator[Server]:
    """A server store (SQLite) with nothing in it yet; `server.start()` serves it."""
    purge(window_url, topology.OPS_QUEUE, topology.REQUESTS_QUEUE, topology.DEAD_QUEUE)
    url = f"sqlite:///{tmp_path / 'server.db'}"
    engine = make_engine(url)
    upgrade(engine, "server")
    engine.dispose()
    server = make_server(url, window_settings)
    try:
        yield server
    finally:
        if server.loop is not None and not server.loop.stop_event.is_set():
            server.finish()
        server.engine.dispose()


@pytest.fixture
def till(
    tmp_path: Path, window_settings: Settings, new_terminal_id: Callable[[], str]
) -> Iterator[Terminal]:
    identity = TerminalIdentity(new_terminal_id(), "L1", "PV1", "retail")
    terminal = make_terminal(str(tmp_path / f"{identity.terminal}.db"), identity, window_settings)
    try:
        yield terminal
    finally:
        terminal.stop_all()
        terminal.engine.dispose()


def context(till: Terminal, settings: Settings | None = None) -> WindowContext:
    return WindowContext(
        db=str(till.engine.url.database),
        engine=till.engine,
        settings=settings or till.settings,
        identity=till.identity,
        tz=dt.UTC,
    )


def window(ctx: WindowContext, **options: Any) -> SyncWindow:
    """The window with its reads repeated often, so a test sees changes at once."""
    timings = {"local_every": 0.2, "compare_every": 1.0, "status_every": 0.3}
    return SyncWindow(ctx, **{**timings, **options})


def drive(
    app: SyncWindow,
    scenario: Callable[[Pilot[None]], Coroutine[Any, Any, None]],
    size: tuple[int, int] = SIZE,
) -> None:
    """Run `scenario` against the window, headless, at a fixed size."""

    async def run() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(run())


async def until(
    pilot: Pilot[None], condition: Callable[[], bool], what: str, timeout: float = WAIT_S
) -> None:
    """Let the window run until `condition` holds (read on its loop); fail naming `what`
    and the window's last message."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            app = pilot.app
            assert isinstance(app, SyncWindow)
            raise AssertionError(f"timed out waiting for {what}; last message: {app.message!r}")
        await pilot.pause(0.05)


async def choose(pilot: Pilot[None], option: str) -> None:
    """Highlight `option` in the list, as the arrow keys do."""
    app = pilot.app
    assert isinstance(app, SyncWindow)
    app.query_one("#options", OptionList).highlighted = app.options.index(option)
    await until(pilot, lambda: app.option == option, f"{option} selected")


def screen_text(app: SyncWindow) -> str:
    """What the screen shows, as text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def equal_on_both_sides(app: SyncWindow, option: str) -> bool:
    row = app.counts.server_row(option)
    here = app.counts.terminal(option)
    return (
        row is not None
        and here is not None
        and here == row.server
        and not app.counts.differs(option)
    )


def acked(till: Terminal) -> int:
    with till.engine.connect() as connection:
        query = sa.select(sa.func.count()).where(outbox.c.state == ACKED)
        return int(connection.execute(query.select_from(outbox)).scalar_one())


def images_held(till: Terminal) -> tuple[set[str], set[str]]:
    """(images the products refer to, images stored) on the till."""
    with till.engine.connect() as connection:
        wanted = connection.execute(
            sa.select(replica.c.image).where(
                replica.c.topic == "productos", replica.c.image.is_not(None)
            )
        )
        stored = connection.execute(sa.select(images.c.sha256))
        return set(wanted.scalars()), set(stored.scalars())


# -- the tests -------------------------------------------------------------------------------


def test_products_with_images_come_down_and_the_counts_become_equal(
    server: Server, till: Terminal
) -> None:
    seeded = seed_catalog(server.engine, products=PRODUCTS, customers=5, images=True)
    server.start()
    app = window(context(till))

    async def scenario(pilot: Pilot[None]) -> None:
        assert app.option == "configuracion"  # selected by default
        await until(pilot, lambda: app.counts.server_row("productos") is not None, "compare")
        assert app.counts.terminal("productos") == 0
        assert app.counts.differs("productos")
        await choose(pilot, "productos")
        assert app.query_one("#images").display
        assert app.query_one("#transmit", Button).disabled  # Transmitir is for up topics
        await pilot.click("#images")
        await pilot.click("#pull")
        await until(pilot, lambda: "registros" in app.message and app._busy is None, "the pull")
        await until(pilot, lambda: equal_on_both_sides(app, "productos"), "equal counts")
        assert "imágenes" in app.message, app.message
        assert "≠" not in app.counts.line("productos").plain
        assert f"{PRODUCTS} " in app.counts.line("productos").plain

    drive(app, scenario)
    wanted, stored = images_held(till)
    assert len(wanted) == PRODUCTS
    assert seeded["images"] >= PRODUCTS
    assert wanted <= stored
    assert Replica(till.engine).count("productos") == {"productos": PRODUCTS}


def test_sales_are_pending_then_transmitted_and_acknowledged(
    server: Server, till: Terminal
) -> None:
    server.start()
    app = window(context(till))

    async def scenario(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.counts.server_row("ventas") is not None, "compare")
        with till.engine.begin() as connection:
            for number in range(1, 6):
                record(connection, sale(number))
        await until(pilot, lambda: app.counts.terminal("ventas") == 5, "5 sales counted")
        await until(pilot, lambda: app.counts.pending == 5, "5 pending")
        await until(
            pilot,
            lambda: app.health is not None and app.health.pending == 5,
            "the status bar's pending count",
        )
        assert "Pendientes: 5" in screen_text(app)
        assert app.counts.terminal(PENDING) == 5
        await choose(pilot, "ventas")
        assert app.query_one("#pull").disabled  # Obtener datos is for download topics
        await pilot.click("#transmit")
        await until(pilot, lambda: app._busy is None and "Transmitir" in app.message, "Transmitir")
        assert "5 acusadas" in app.message, app.message
        await until(pilot, lambda: equal_on_both_sides(app, "ventas"), "ventas equal")
        await until(pilot, lambda: app.counts.pending == 0, "nothing pending")

    drive(app, scenario)
    assert acked(till) == 5


def test_a_cancelled_pull_keeps_what_arrived(
    server: Server, till: Terminal, window_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each page the till applies takes 0.1 s more, so the 30-page pull is still streaming
    # when Cancelar is pressed however fast the machine is (not a timing assertion: a slow
    # machine only makes the window wider).
    import inbox.terminal_consumer as consumer

    applied = consumer.apply_down

    def slow_apply(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.1)
        return applied(*args, **kwargs)

    monkeypatch.setattr(consumer, "apply_down", slow_apply)
    seed_catalog(server.engine, products=BIG_CATALOG, locations=())
    serving = server.start()
    wait_for(lambda: server.unpublished() == 0, "the seed's changes published", serving)
    purge_terminal_queue(window_url, till)  # the pull alone brings the products
    app = window(context(till))

    def held() -> int:
        return Replica(till.engine).count("productos")["productos"]

    async def scenario(pilot: Pilot[None]) -> None:
        await choose(pilot, "productos")
        await pilot.click("#pull")
        await until(pilot, lambda: held() > 0, "a first page applied")
        await pilot.press("escape")  # Cancelar (a click waits for the bar's animation)
        await until(pilot, lambda: app._busy is None, "the pull stopped")
        assert "cancelado" in app.message, app.message
        assert f"Se conserva lo que llegó ({number(held())} registros" in app.message
        assert not app.query_one("#progress").has_class("running")
        kept = held()
        assert 0 < kept < BIG_CATALOG
        with till.engine.connect() as connection:
            assert connection.execute(sa.select(pulls.c.status)).scalars().all() == [ABANDONED]

        await pilot.click("#pull")  # again: what is missing comes
        await until(pilot, lambda: app._busy is None and "registros" in app.message, "pull")
        await until(pilot, lambda: equal_on_both_sides(app, "productos"), "equal counts")
        assert held() == BIG_CATALOG

    drive(app, scenario)


def test_a_bad_date_in_the_filter_is_a_message_and_a_good_one_filters(till: Terminal) -> None:
    app = window(context(till), compare_timeout=2)

    async def scenario(pilot: Pilot[None]) -> None:
        app.query_one("#since", Input).focus()
        await pilot.press(*"2026-13-45", "enter")
        await until(pilot, lambda: "filtro de fechas" in app.message, "the message")
        assert "desde '2026-13-45' is not a date" in app.message, app.message
        assert app.ctx.period.open
        assert app.option == "configuracion"  # the letters were typed, not commands

        app.query_one("#since", Input).value = "2026-11-01"
        app.query_one("#until", Input).value = "2026-11-30"
        await pilot.click("#apply")
        await until(pilot, lambda: not app.ctx.period.open, "the period set")
        assert app.ctx.period.since == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        assert app.ctx.period.until == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        assert "desde 2026-11-01 00:00 hasta 2026-12-01 00:00" in screen_text(app)

    drive(app, scenario)


def test_an_unreachable_broker_is_a_clear_status_and_no_traceback(
    till: Terminal, window_settings: Settings
) -> None:
    away = window_settings.with_overrides(broker_url=UNREACHABLE)
    app = window(context(till, away))

    async def scenario(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.health is not None, "the probe")
        assert app.health is not None
        assert app.health.broker_error is not None
        assert "127.0.0.1:1 is unreachable" in app.health.broker_error
        await until(pilot, lambda: app.counts.compare_error is not None, "compare to fail")
        shown = screen_text(app)
        assert "Broker: sin conexión" in shown
        assert "servidor no responde" in shown
        assert "?" in app.counts.line("productos").plain
        await pilot.press("o")  # Obtener datos on Configuración
        await until(pilot, lambda: app._busy is None and "Obtener datos" in app.message, "pull")
        assert "unreachable" in app.message, app.message
        assert "Traceback" not in screen_text(app)

    drive(app, scenario)


def test_the_help_screen_names_every_key_with_its_command(till: Terminal) -> None:
    app = window(context(till), compare_timeout=2)

    async def scenario(pilot: Pilot[None]) -> None:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.pause()
        shown = screen_text(app)
        for spanish, command in (
            ("Obtener datos", "cajasync pull"),
            ("Transmitir", "cajasync terminal run --until-idle"),
            ("Actualizar Datos", "cajasync pull --all"),
            ("Comparar registros", "cajasync diff"),
            ("Comparar", "cajasync compare"),
            ("Depurar productos", "cajasync tools prune productos"),
            ("Borrar operaciones sincronizadas", "cajasync tools purge-synced"),
        ):
            assert spanish in shown, spanish
            assert command in shown, command
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")

    drive(app, scenario, size=(132, 90))  # the whole help at once: no scrolling


def test_herramientas_opens_the_purge_screen_and_counts_are_read_again(till: Terminal) -> None:
    app = window(context(till), compare_timeout=2, local_every=600, compare_every=600)

    async def scenario(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.local_reads == 1, "the first counts")
        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, ToolsMenu), "the Herramientas menu")
        await pilot.click("#purge")
        await until(pilot, lambda: isinstance(app.screen, PurgeScreen), "the purge screen")
        assert app.local_reads == 1
        app.screen.dismiss(None)
        await until(pilot, lambda: not isinstance(app.screen, PurgeScreen), "purge closed")
        await until(pilot, lambda: app.local_reads == 2, "the counts read again")

    drive(app, scenario)


def test_a_right_click_on_an_option_opens_its_record_comparison(till: Terminal) -> None:
    app = window(context(till), compare_timeout=2)

    async def scenario(pilot: Pilot[None]) -> None:
        await choose(pilot, "clientes")
        await pilot.click("#options", offset=(2, 1), button=3)
        await until(pilot, lambda: isinstance(app.screen, DiffScreen), "the record comparison")
        screen = app.screen
        assert isinstance(screen, DiffScreen)

    drive(app, scenario)


def test_snapshot_writes_the_window_as_svg_and_exits(
    server: Server, till: Terminal, tmp_path: Path, window_url: str
) -> None:
    from cli.main import cli

    seed_catalog(server.engine, products=PRODUCTS, customers=5)
    server.start()
    out = tmp_path / "window.svg"
    db = str(till.engine.url.database)
    result = CliRunner().invoke(
        cli, ["window", "--db", db, "--broker-url", window_url, "--snapshot", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"window written to {out}" in result.output
    svg = out.read_text()
    assert svg.startswith("<svg")
    assert "Sincronizador" in svg
    assert "Productos" in svg


def test_a_database_not_initialised_is_one_line_saying_what_to_run(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    engine = make_engine(str(empty))
    upgrade(engine, "terminal")
    engine.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "window", "--db", str(empty)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ")
    assert "cajasync terminal init" in done.stderr
