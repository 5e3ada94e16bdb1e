"""`cajasync replica …`: what the terminal holds of the server's master data."""

from __future__ import annotations

from typing import Any

import click

from cajasync.core.db import opened
from cli.options import json_option, terminal_db_option
from cli.output import emit_json, table
from inbox.replica_api import ALL_LOCATIONS, Replica
from schemas.codec import to_builtins, to_json
from schemas.records import Record
from schemas.topics import DOWN_TOPIC_SCOPES, down_topic


@click.group()
def replica() -> None:
    """Read the terminal's replica of the server data (what the POS sees).

    TOPIC is a down topic by slug or English alias: productos (products), clientes
    (customers), configuracion (config), stock, combos, ofertas (offers), …  Stock is
    this till's location's unless --location names another (`*`: every one held), and
    says which location each record belongs to.
    """


def _location_option(command: Any) -> Any:
    return click.option(
        "--location",
        metavar="LOCATION",
        help="stock: this location's (default: the till's own; '*': every location held).",
    )(command)


@replica.command("count")
@terminal_db_option
@click.argument("topic", required=False)
@_location_option
@json_option
def count_cmd(db: str, topic: str | None, location: str | None, as_json: bool) -> None:
    """Records per topic (deleted ones not counted)."""
    slug = None if topic is None else down_topic(topic)
    with opened(db, "terminal") as engine:
        counts = Replica(engine).count(slug, location=location)
    if as_json:
        emit_json(counts)
        return
    table("Replica", ["topic", "records"], list(counts.items()))


@replica.command("list")
@terminal_db_option
@click.argument("topic")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, help="Skip this many first (a page)."
)
@_location_option
@json_option
def list_cmd(
    db: str, topic: str, limit: int | None, offset: int, location: str | None, as_json: bool
) -> None:
    """The records of TOPIC, by key (stock with the location it belongs to)."""
    slug = down_topic(topic)
    with opened(db, "terminal") as engine:
        located = Replica(engine).located(slug, limit=limit, location=location, offset=offset)
    records = [record for _where, record in located]
    per_location = DOWN_TOPIC_SCOPES[slug] == "loc"
    if as_json:
        emit_json(
            [{"location": where, **to_builtins(record)} for where, record in located]
            if per_location
            else records
        )
        return
    rows = [
        {"location": where, **_flat(record)} if per_location else _flat(record)
        for where, record in located
    ]
    columns = list(dict.fromkeys(name for row in rows for name in row))
    table(f"{slug} ({len(records)})", columns, [[row.get(c) for c in columns] for row in rows])


@replica.command("show")
@terminal_db_option
@click.argument("topic")
@click.argument("key")
@json_option
def show_cmd(db: str, topic: str, key: str, as_json: bool) -> None:
    """One record of TOPIC by KEY, with its version and every field (stock: of any
    location, with the location it belongs to)."""
    slug = down_topic(topic)
    with opened(db, "terminal") as engine:
        found = Replica(engine).locate(slug, key, location=ALL_LOCATIONS)
    if found is None:
        raise click.ClickException(f"no {slug} record with key {key!r} in this terminal")
    where, record = found
    fields = _flat(record)
    if DOWN_TOPIC_SCOPES[slug] == "loc":
        fields = {"location": where, **fields}
    if as_json:
        loc = DOWN_TOPIC_SCOPES[slug] == "loc"
        emit_json({"location": where, **to_builtins(record)} if loc else record)
        return
    table(f"{slug} {key}", ["field", "value"], list(fields.items()))


def _flat(record: Record) -> dict[str, Any]:
    """A record as one table row: nested values (lists, price lists, items) as JSON."""
    return {
        name: value
        if isinstance(value, str | int | float | bool) or value is None
        else _json(value)
        for name, value in to_builtins(record).items()
    }


def _json(value: Any) -> str:
    return to_json(value).decode()
