"""`cajasync diff`: the seed's "compare records", keys that differ between till and server."""

from __future__ import annotations

import sys

import click
from rich.filesize import decimal

from cajasync.core.db import opened
from cli.filters import period_options, terminal_period, timezone_option
from cli.options import broker_option, json_option, settings_for, terminal_db_option
from cli.output import console, emit_json, table


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
@broker_option
@json_option
def diff(
    db: str,
    topic: str,
    since: str | None,
    until: str | None,
    timezone: str | None,
    timeout: float,
    broker_url: str,
    as_json: bool,
) -> None:
    """List the keys of TOPIC missing on the server, missing on this terminal, or held in
    different versions (op ids for ventas, pagos...; record keys for productos, clientes...).

    Exit status 0 when nothing differs, 1 otherwise.
    """
    from cajasync.processes.diff import diff as run_diff

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
        table(
            "missing on the server",
            ["key", "state on the terminal"],
            [[key, result.states.get(key)] for key in result.missing_on_server],
        )
        table("missing on the terminal", ["key"], [[key] for key in result.missing_on_terminal])
        table(
            "version differs",
            ["key", "terminal", "server"],
            [[row.key, row.terminal, row.server] for row in result.version_differs],
        )
        console.print(
            f"bytes moved {decimal(result.bytes_moved)} in {result.rounds} rounds, "
            f"{result.seconds:.2f}s",
            highlight=False,
        )
    sys.exit(0 if result.equal else 1)


def _builtins(result: object) -> dict[str, object]:
    from schemas.codec import to_builtins

    data = to_builtins(result)
    assert isinstance(data, dict)
    return data
