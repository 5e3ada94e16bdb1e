"""`cajasync replica …`: what the terminal holds of the server's master data."""

from __future__ import annotations

from typing import Any

import click

from cajasync.core.db import opened
from cli.options import json_option, terminal_db_option
from cli.output import emit_json, table
from inbox.replica_api import Replica
from schemas.codec import to_builtins, to_json
from schemas.records import Record
from schemas.topics import down_topic


@click.group()
def replica() -> None:
    """Read the terminal's replica of the server data (what the POS sees).

    TOPIC is a down topic by slug or English alias: productos (products), clientes
    (customers), configuracion (config), stock, combos, ofertas (offers), …
    """


@replica.command("count")
@terminal_db_option
@click.argument("topic", required=False)
@json_option
def count_cmd(db: str, topic: str | None, as_json: bool) -> None:
    """Records per topic (deleted ones not counted)."""
    slug = None if topic is None else down_topic(topic)
    with opened(db, "terminal") as engine:
        counts = Replica(engine).count(slug)
    if as_json:
        emit_json(counts)
        return
    table("Replica", ["topic", "records"], list(counts.items()))


@replica.command("list")
@terminal_db_option
@click.argument("topic")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@json_option
def list_cmd(db: str, topic: str, limit: int | None, as_json: bool) -> None:
    """The records of TOPIC, by key."""
    slug = down_topic(topic)
    with opened(db, "terminal") as engine:
        records = Replica(engine).query(slug, limit=limit)
    if as_json:
        emit_json(records)
        return
    rows = [_flat(record) for record in records]
    columns = list(dict.fromkeys(name for row in rows for name in row))
    table(f"{slug} ({len(records)})", columns, [[row.get(c) for c in columns] for row in rows])


@replica.command("show")
@terminal_db_option
@click.argument("topic")
@click.argument("key")
@json_option
def show_cmd(db: str, topic: str, key: str, as_json: bool) -> None:
    """One record of TOPIC by KEY, with its version and every field."""
    slug = down_topic(topic)
    with opened(db, "terminal") as engine:
        record = Replica(engine).get_record(slug, key)
    if record is None:
        raise click.ClickException(f"no {slug} record with key {key!r} in this terminal")
    if as_json:
        emit_json(record)
        return
    table(f"{slug} {key}", ["field", "value"], list(_flat(record).items()))


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
