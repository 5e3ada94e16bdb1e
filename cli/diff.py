"""`cajasync diff`: the seed's "compare records", keys that differ between till and server."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.filesize import decimal

from cajasync.core.db import opened
from cli.filters import period_options, terminal_period, timezone_option
from cli.options import broker_option, json_option, settings_for, terminal_db_option
from cli.output import console, emit_json, table

if TYPE_CHECKING:
    from cajasync.processes.diff import DiffResult
    from cajasync.processes.sides import Side


@click.command("diff")
@terminal_db_option
@click.argument("topic")
@period_options
@timezone_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=10,
    show_default=True,
    metavar="SECONDS",
    help="Give up when the server has not answered a question after this long.",
)
@click.option(
    "--show",
    "show_key",
    metavar="KEY",
    help="Show this key's record (or operation) on both sides instead of listing keys.",
)
@broker_option
@json_option
def diff(
    db: str,
    topic: str,
    since: str | None,
    until: str | None,
    timezone: str | None,
    timeout: float,
    show_key: str | None,
    broker_url: str,
    as_json: bool,
) -> None:
    """List the keys of TOPIC missing on the server, missing on this terminal, or held in
    different versions (op ids for ventas, pagos...; record keys for productos, clientes...).
    With --show KEY, that key's record on the terminal and on the server.

    Exit status 0 when nothing differs, 1 otherwise.
    """
    from cajasync.processes.diff import diff as run_diff

    if show_key is not None:
        _show(db, topic, show_key, timeout, broker_url, as_json)
        return
    with opened(db, "terminal") as engine:
        period = terminal_period(engine, since, until, timezone)
        result = run_diff(engine, settings_for(broker_url), topic, period, timeout=timeout)
    if as_json:
        emit_json({**_builtins(result), "equal": result.equal})
    else:
        what = "operations" if result.direction == "up" else "records"
        console.print(
            f"{result.topic}: {result.terminal_count} {what} on the terminal, "
            f"{result.server_count} on the server",
            highlight=False,
        )
        if result.equal:
            console.print("nothing differs: every key is on both sides in the same version")
        if result.missing_on_server:
            table(
                f"missing on the server ({len(result.missing_on_server)})",
                ["key", "state on the terminal"],
                [[key, result.states.get(key)] for key in result.missing_on_server],
            )
        if result.missing_on_terminal:
            table(
                f"missing on the terminal ({len(result.missing_on_terminal)})",
                ["key"],
                [[key] for key in result.missing_on_terminal],
            )
        if result.version_differs:
            table(
                f"version differs ({len(result.version_differs)})",
                ["key", "terminal", "server"],
                [[row.key, row.terminal, row.server] for row in result.version_differs],
            )
        if not result.equal:
            console.print(_advice(result), highlight=False)
        console.print(
            f"{decimal(result.bytes_moved)} moved in {result.rounds} round(s), "
            f"{result.seconds:.2f}s",
            highlight=False,
        )
    sys.exit(0 if result.equal else 1)


def _show(db: str, topic: str, key: str, timeout: float, broker_url: str, as_json: bool) -> None:
    """One key on both sides: exit 0 when both hold it in the same version, 1 otherwise."""
    from cajasync.processes.sides import record_sides

    with opened(db, "terminal") as engine:
        sides = record_sides(engine, settings_for(broker_url), topic, key, timeout=timeout)
    if as_json:
        emit_json({**_builtins(sides), "same": sides.same})
        sys.exit(0 if sides.same else 1)
    for name, side in (("terminal", sides.terminal), ("server", sides.server)):
        rows: list[list[object]] = [["status", side.status], ["version", side.version]]
        rows += [[label, value] for label, value in _notes(side) if value]
        rows += [[field, _cell(value)] for field, value in (side.data or {}).items()]
        table(f"{sides.topic} {key} on the {name}", ["field", "value"], rows)
    sys.exit(0 if sides.same else 1)


def _notes(side: Side) -> list[tuple[str, object]]:
    return [("location", side.location), ("reason", side.reason), ("received", side.received_at)]


def _cell(value: object) -> object:
    if isinstance(value, dict | list):
        from schemas.codec import to_json

        return to_json(value).decode()
    return value


def _advice(result: DiffResult) -> str:
    """What to do about the differences, in the seed's words."""
    if result.direction == "up":
        unsent = [k for k in result.missing_on_server if result.states.get(k) != "purged"]
        parts = []
        if unsent:
            parts.append(
                f"{len(unsent)} operation(s) the server lacks: send them again with "
                "`cajasync pending replay OP_ID...`, then `cajasync terminal run`"
            )
        if result.missing_on_terminal:
            parts.append(
                f"{len(result.missing_on_terminal)} on the server only: loaded on the server "
                "by hand, or recorded by another copy of this till"
            )
        return "; ".join(parts) or "differences are purged operations only"
    parts = []
    if result.missing_on_terminal or result.version_differs:
        parts.append(f"`cajasync pull --db ... {result.topic}` brings what this till lacks")
    if result.missing_on_server:
        parts.append(
            f"`cajasync tools prune {result.topic} --db ... --yes` removes what the server no "
            "longer has"
        )
    return "; ".join(parts)


def _builtins(result: object) -> dict[str, object]:
    from schemas.codec import to_builtins

    data = to_builtins(result)
    assert isinstance(data, dict)
    return data
