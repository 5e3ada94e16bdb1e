"""`cajasync pending …`: Operaciones Pendientes, for technicians."""

from __future__ import annotations

import datetime as dt
import uuid

import click

from cajasync.core.db import opened
from cajasync.core.terminal_tables import STATES
from cli.filters import period_options, till_period, timezone_option
from cli.options import json_option, terminal_db_option
from cli.output import console, emit_json, table
from outbox.pending import pending_page, replay, show_operation
from schemas.codec import to_json


@click.group()
def pending() -> None:
    """Operations the server has not acknowledged yet."""


@pending.command("list")
@terminal_db_option
@click.option("--topic", help="ventas, pagos, cierres-z, archivos-semanales (or English alias).")
@click.option("--state", type=click.Choice([s for s in STATES if s != "acked"]))
@period_options
@timezone_option
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, help="Skip this many oldest (a page)."
)
@json_option
def list_cmd(
    db: str,
    topic: str | None,
    state: str | None,
    since: str | None,
    until: str | None,
    timezone: str | None,
    limit: int | None,
    offset: int,
    as_json: bool,
) -> None:
    """List every operation not yet acked (never sent, sent, rejected), oldest first, with
    its ticket, amount and customer (or file name); the title counts them all."""
    with opened(db, "terminal") as engine:
        period, tz = till_period(engine, since, until, timezone)
        page = pending_page(
            engine, topic=topic, state=state, period=period, limit=limit, offset=offset
        )
    if as_json:
        emit_json(page.ops)
        return
    table(
        f"Operaciones Pendientes ({len(page.ops)} shown of {page.total})",
        [
            "seq",
            "topic",
            "ticket / file",
            "amount",
            "customer",
            "op_id",
            "v",
            "state",
            "attempts",
            "recorded",
            "last error",
        ],
        [
            [
                o.seq,
                o.topic,
                o.reference,
                o.amount,
                o.customer,
                o.op_id,
                o.version,
                o.state,
                o.attempts,
                _when(o.recorded_at, tz),
                o.last_error,
            ]
            for o in page.ops
        ],
    )


@pending.command("show")
@terminal_db_option
@click.argument("op_id")
@timezone_option
@json_option
def show_cmd(db: str, op_id: str, timezone: str | None, as_json: bool) -> None:
    """Every version of one operation: state, attempts, the server's reason when rejected,
    timestamps, and the operation itself (a weekly file chunk's data by its size)."""
    with opened(db, "terminal") as engine:
        history = show_operation(engine, _uuid(op_id))
        tz = till_period(engine, None, None, timezone)[1]
    if as_json:
        emit_json(history)
        return
    console.print(f"[bold]{history.topic} {history.op_id}[/bold]")
    for v in history.versions:
        table(
            f"version {v.version} (seq {v.seq}): {v.state}",
            ["field", "value"],
            [
                ["attempts", v.attempts],
                ["last error" if v.state != "rejected" else "rejected because", v.last_error],
                ["recorded", _when(v.recorded_at, tz)],
                ["sent", _when(v.sent_at, tz)],
                ["settled", _when(v.settled_at, tz)],
                *([["purged", _when(v.purged_at, tz)]] if v.purged_at else []),
            ],
        )
        if v.operation is None:
            console.print("(the operation was purged from this till: its body is gone)")
        else:
            console.print_json(to_json(v.operation).decode())


def _when(moment: dt.datetime | None, tz: dt.tzinfo) -> str | None:
    return None if moment is None else moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


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
