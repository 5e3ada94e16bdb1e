"""`cajasync tools prune`: delete replica records the server no longer has ("Herramientas")."""

from __future__ import annotations

import click

from cajasync.core.db import opened
from cli.options import broker_option, json_option, settings_for, terminal_db_option
from cli.output import console, emit_json


@click.command("prune")
@click.argument("topic")
@terminal_db_option
@click.option("--yes", "apply", is_flag=True, help="Delete them (without it: only list them).")
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
def prune(topic: str, db: str, apply: bool, timeout: float, broker_url: str, as_json: bool) -> None:
    """Find the records of a download TOPIC (productos, clientes...) this terminal holds and
    the server no longer has; delete them with --yes."""
    from cajasync.processes.diff import prune as run_prune

    with opened(db, "terminal") as engine:
        result = run_prune(engine, settings_for(broker_url), topic, apply=apply, timeout=timeout)
    if as_json:
        emit_json(result)
        return
    for key in result.keys:
        console.print(f"{result.topic} {key}", highlight=False)
    if not result.keys:
        console.print(f"{result.topic}: nothing to prune", highlight=False)
    elif result.applied:
        console.print(f"pruned {result.pruned} {result.topic} records", highlight=False)
    else:
        console.print(
            f"{len(result.keys)} {result.topic} records would be pruned: run again with --yes",
            highlight=False,
        )
