"""`cajasync pull`: "Obtener datos" / "Actualizar Datos" with a progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cajasync.core.db import opened
from cajasync.errors import PullCancelled
from cli.options import broker_option, json_option, terminal_db_option, terminal_settings
from cli.output import console, emit_json
from cli.progress import cancel_on_signals


@click.command("pull")
@terminal_db_option
@click.argument("topics", nargs=-1)
@click.option("--all", "pull_all", is_flag=True, help="Every topic this terminal receives.")
@click.option("--images", is_flag=True, help="Include the images the terminal lacks.")
@click.option("--full", is_flag=True, help="A whole snapshot, even of topics already held.")
@click.option("--combo-products", is_flag=True, help="With combos: also the products they contain.")
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="KEY",
    help="Only this record (repeat for more), e.g. `pull clientes --key C1 --key C2`.",
)
@click.option(
    "--location",
    metavar="LOCATION",
    help="stock: another location's, kept beside this till's own (which stays the live one).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    metavar="SECONDS",
    help="Give up (keeping what arrived) after this long.",
)
@broker_option
@json_option
def pull(
    db: str,
    topics: tuple[str, ...],
    pull_all: bool,
    images: bool,
    full: bool,
    combo_products: bool,
    keys: tuple[str, ...],
    location: str | None,
    timeout: float,
    broker_url: str,
    as_json: bool,
) -> None:
    """Bring server data to this terminal: a snapshot the first time, then only changes.

    TOPICS are down topics by slug or English alias (productos / products, clientes /
    customers, stock, combos, …); --all takes every one the terminal receives. `--key`
    brings only those records ("descargar clientes específicos") and names the ones the
    server lacks; `stock --location L2` brings another location's stock. Ctrl-C stops it
    keeping what arrived (exit status 130).
    """
    from cajasync.processes.pull import pull as run_pull

    if pull_all == bool(topics):
        raise click.UsageError("give either --all or one or more TOPICS")
    with (
        opened(db, "terminal") as engine,
        _progress(quiet=as_json) as on_progress,
        cancel_on_signals() as cancel,
    ):
        try:
            result = run_pull(
                engine,
                terminal_settings(db, broker_url),
                None if pull_all else list(topics),
                images=images,
                full=full,
                combo_products=combo_products,
                keys=keys,
                location=location,
                timeout=timeout,
                on_progress=on_progress,
                cancel=cancel,
            )
        except PullCancelled as exc:
            console.print(str(exc), style="yellow", highlight=False)
            sys.exit(130)
    if as_json:
        emit_json(result)
        return
    what = f"{result.records} records ({decimal(result.bytes)})"
    if images:
        what += f" and {result.images} images ({decimal(result.image_bytes)})"
    kind = "snapshot" if result.full else "pull"
    of = ", ".join(result.topics) + (f" of location {result.location}" if result.location else "")
    console.print(f"{kind} of {of}: {what} in {result.seconds:.1f}s", highlight=False)
    if result.removed:
        console.print(f"removed {result.removed} records the server no longer has", highlight=False)
    if result.missing_keys:
        missing = ", ".join(result.missing_keys)
        console.print(f"not on the server: {missing}", style="yellow", highlight=False)


@contextmanager
def _progress(*, quiet: bool) -> Iterator[Callable[[int, int, int, int], None]]:
    """An `on_progress(records, bytes, images, image_bytes)` drawing a live status bar."""
    if quiet or not console.is_terminal:
        yield lambda *_counts: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]pulling"),
        BarColumn(),
        TextColumn("{task.fields[records]} records · {task.fields[size]}"),
        TextColumn("{task.fields[images]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("pull", total=None, records=0, size="0 B", images="")

        def update(records: int, nbytes: int, image_count: int, image_bytes: int) -> None:
            shown = f"· {image_count} images ({decimal(image_bytes)})" if image_count else ""
            progress.update(task, records=records, size=decimal(nbytes), images=shown)

        yield update
