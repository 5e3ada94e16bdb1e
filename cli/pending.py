"""`cajasync pending …`: Operaciones Pendientes, for technicians."""

from __future__ import annotations

import uuid

import click

from cajasync.core.db import opened
from cajasync.core.terminal_tables import STATES
from cli.options import json_option, terminal_db_option
from cli.output import console, emit_json, table
from outbox.pending import list_pending, replay


@click.group()
def pending() -> None:
    """Operations the server has not acknowledged yet."""


@pending.command("list")
@terminal_db_option
@click.option("--topic", help="ventas, pagos, cierres-z, archivos-semanales (or English alias).")
@click.option("--state", type=click.Choice([s for s in STATES if s != "acked"]))
@click.option("--limit", type=click.IntRange(min=1), default=None)
@json_option
def list_cmd(
    db: str, topic: str | None, state: str | None, limit: int | None, as_json: bool
) -> None:
    """List every operation not yet acked (never sent, sent, rejected), oldest first."""
    with opened(db, "terminal") as engine:
        ops = list_pending(engine, topic=topic, state=state, limit=limit)
    if as_json:
        emit_json(ops)
        return
    table(
        f"Operaciones Pendientes ({len(ops)})",
        ["seq", "topic", "op_id", "v", "state", "attempts", "recorded", "last error"],
        [
            [
                o.seq,
                o.topic,
                o.op_id,
                o.version,
                o.state,
                o.attempts,
                o.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
                o.last_error,
            ]
            for o in ops
        ],
    )


@pending.command("replay")
@terminal_db_option
@click.option("--all", "replay_all", is_flag=True, help="Every operation not yet acked.")
@click.argument("op_ids", nargs=-1)
def replay_cmd(db: str, replay_all: bool, op_ids: tuple[str, ...]) -> None:
    """Queue operations to be sent again on the next relay pass."""
    if replay_all == bool(op_ids):
        raise click.UsageError("give either --all or one or more OP_IDs")
    ids = None if replay_all else [_uuid(value) for value in op_ids]
    with opened(db, "terminal") as engine:
        count = replay(engine, ids)
    console.print(f"{count} outbox rows queued again; `cajasync terminal run` will send them")


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an op id (a UUID)", param_hint="OP_IDS"
        ) from None
