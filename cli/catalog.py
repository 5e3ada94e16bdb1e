"""`cajasync catalog …`: the back office's master data, its change log and its feed."""

from __future__ import annotations

from typing import IO

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from cajasync.core.db import opened
from cli.options import (
    broker_option,
    json_option,
    server_db_option,
    settings_for,
    until_idle_option,
)
from cli.output import console, emit_json, table
from cli.progress import live_stats, stop_on_signals
from schemas.topics import down_topic

TABLE_LIMIT = 50
SCOPE_HELP = "all, loc.<location>, pos.<point of sale> or term.<terminal>."


@click.group()
def catalog() -> None:
    """Edit the server's master data; every change is versioned and fed to the terminals."""


@catalog.command("upsert")
@server_db_option
@click.argument("topic")
@click.option(
    "--json",
    "source",
    type=click.File("rb"),
    required=True,
    metavar="FILE|-",
    help="A JSON record or array of records (as `replica show` prints); - reads stdin.",
)
@click.option("--scope", default="all", show_default=True, help=SCOPE_HELP)
def upsert(db: str, topic: str, source: IO[bytes], scope: str) -> None:
    """Create or replace records of TOPIC (slug or English alias); versions are assigned here.

    Every record is checked first (prices, tax rates, names, ...): with any bad one, each is
    listed on its own line, nothing is written, and the exit status is 1.
    """
    from outbox import catalog as lib

    records = lib.records_from_json(topic, source.read())
    with opened(db, "server") as engine, engine.begin() as connection:
        changes = lib.upsert_many(connection, records, scope=scope)
    if len(changes) <= TABLE_LIMIT:
        rows = [[c.key, c.version, c.stream, c.seq] for c in changes]
        table(f"{down_topic(topic)}: upserted", ["key", "version", "stream", "seq"], rows)
    tops: dict[str, int] = {}
    for change in changes:
        tops[change.stream] = max(tops.get(change.stream, 0), change.seq)
    heads = ", ".join(f"{stream} at seq {seq}" for stream, seq in tops.items())
    console.print(f"{len(changes)} record(s) upserted; {heads or 'nothing to do'}")


@catalog.command("delete")
@server_db_option
@click.argument("topic")
@click.argument("key")
@click.option("--scope", default="all", show_default=True, help=SCOPE_HELP)
@json_option
def delete(db: str, topic: str, key: str, scope: str, as_json: bool) -> None:
    """Delete KEY of TOPIC: terminals drop it (the tombstone keeps its version)."""
    from outbox import catalog as lib

    with opened(db, "server") as engine, engine.begin() as connection:
        change = lib.delete(connection, topic, key, scope=scope)
    if as_json:
        emit_json(change)
    elif change is None:
        console.print(f"nothing to delete: no current {key!r} in {topic} ({scope})")
    else:
        console.print(
            f"deleted {change.key}: version {change.version}, {change.stream} seq {change.seq}"
        )


@catalog.command("show")
@server_db_option
@click.argument("topic")
@click.argument("key")
@click.option("--scope", default="all", show_default=True, help=SCOPE_HELP)
def show(db: str, topic: str, key: str, scope: str) -> None:
    """Print the current record of KEY as JSON (the shape `catalog upsert` reads)."""
    from outbox import catalog as lib

    with opened(db, "server") as engine, engine.connect() as connection:
        record = lib.get(connection, topic, key, scope)
    if record is None:
        raise click.ClickException(f"no current {key!r} in {topic} ({scope})")
    emit_json(record)


@catalog.command("seed")
@server_db_option
@click.option("--products", type=click.IntRange(min=0), required=True, help="Products to create.")
@click.option("--customers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--images", is_flag=True, help="Give every product a (fake) image.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@json_option
def seed(db: str, products: int, customers: int, images: bool, seed: int, as_json: bool) -> None:
    """Fill every down topic with a realistic sample back office (repeatable for a seed)."""
    from cajasync.samples.seed import seed_catalog

    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with (
        opened(db, "server") as engine,
        Progress(*columns, console=console, transient=True, disable=as_json) as progress,
    ):
        task = progress.add_task("seeding", total=None)
        counts = seed_catalog(
            engine,
            products=products,
            customers=customers,
            images=images,
            seed=seed,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if as_json:
        emit_json(counts)
        return
    table("Seeded catalog", ["topic", "records"], sorted(counts.items()))


@catalog.command("publish")
@server_db_option
@broker_option
@until_idle_option
def publish(db: str, broker_url: str, until_idle: float | None) -> None:
    """Publish the change log to the terminals (the server's feed relay)."""
    from outbox.feed_relay import run_feed_relay

    settings = settings_for(broker_url)
    with opened(db, "server") as engine, live_stats("feed") as on_progress:
        stats = run_feed_relay(
            engine, settings, until_idle=until_idle, stop=stop_on_signals(), on_progress=on_progress
        )
    console.print(f"feed relay stopped: {stats}")
