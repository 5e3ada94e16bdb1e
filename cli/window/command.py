"""`cajasync window`: the synchronizer window at the till (cli/main.py registers it).

This module imports no Textual at import time: `cli.main` imports it for every command,
and the window's toolkit loads only when the window opens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import click

from cajasync.core.settings import Settings
from cli.filters import timezone_option
from cli.options import broker_option, terminal_db_option, terminal_settings
from cli.window.context import WindowContext

SNAPSHOT_SIZE: Final = (132, 40)  # columns, lines of a `--snapshot`


@click.command("window")
@terminal_db_option
@broker_option
@timezone_option
@click.option(
    "--snapshot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    metavar="FILE.svg",
    help="Load everything, render the window once headless (no terminal needed) as an SVG "
    "file, and exit: for docs and support tickets.",
)
def window(db: str, broker_url: str, timezone: str | None, snapshot: Path | None) -> None:
    """The synchronizer window: options, counts on both sides, Obtener datos, Transmitir,
    Actualizar Datos, Comparar registros, Herramientas, live status (`?` for help)."""
    with window_context(db, terminal_settings(db, broker_url), timezone) as ctx:
        from cli.window.app import SyncWindow

        app = SyncWindow(ctx, snapshot=snapshot)
        if snapshot is None:
            app.run()
        else:
            app.run(headless=True, size=SNAPSHOT_SIZE)
    if app.failure is not None:
        raise click.ClickException(app.failure)
    if snapshot is not None:
        click.echo(f"window written to {snapshot}")


@contextlib.contextmanager
def window_context(db: str, settings: Settings, timezone: str | None) -> Iterator[WindowContext]:
    """The till's context for the length of the window: its database opened (a missing or
    uninitialised one is a CajasyncError saying to run `cajasync terminal init`), the
    settings its commands use, its identity and time zone."""
    from cajasync.core.db import opened, reading
    from cajasync.core.identity import load_identity
    from inbox.replica_api import terminal_zone

    with opened(db, "terminal") as engine:
        with reading(engine) as connection:
            identity = load_identity(connection)
        yield WindowContext(
            db=db,
            engine=engine,
            settings=settings,
            identity=identity,
            tz=terminal_zone(engine, timezone),
        )
