"""`cajasync compare`: "Comparar", counts on the till and on the server side by side."""

from __future__ import annotations

import sys

import click

from cajasync.core.db import opened
from cli.filters import period_options, terminal_period, timezone_option
from cli.options import broker_option, json_option, settings_for, terminal_db_option
from cli.output import console, emit_json, table


@click.command("compare")
@terminal_db_option
@click.option("--topic", "topics", multiple=True, help="A topic (slug or alias); repeatable.")
@period_options
@timezone_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=10,
    show_default=True,
    metavar="SECONDS",
    help="Give up when the server has not answered after this long.",
)
@broker_option
@json_option
def compare(
    db: str,
    topics: tuple[str, ...],
    since: str | None,
    until: str | None,
    timezone: str | None,
    timeout: float,
    broker_url: str,
    as_json: bool,
) -> None:
    """Count each topic on this terminal and on the server for the same filter.

    Exit status 0 when every topic is equal, 1 when something differs.
    """
    from cajasync.processes.questions import compare as run_compare

    with opened(db, "terminal") as engine:
        period = terminal_period(engine, since, until, timezone)
        result = run_compare(
            engine, settings_for(broker_url), list(topics) or None, period, timeout=timeout, db=db
        )
    if as_json:
        emit_json(result)
    else:
        table(
            f"Comparar: terminal {result.terminal}, {result.period}",
            ["topic", "terminal", "server", "", "states", "hint"],
            [
                [
                    t.topic,
                    t.terminal,
                    t.server,
                    "=" if t.equal else "≠",
                    ", ".join(f"{n} {state}" for state, n in sorted(t.states.items())),
                    t.hint,
                ]
                for t in result.topics
            ],
        )
        for note in result.notes:
            console.print(f"note: {note}", highlight=False)
        console.print(f"answered in {result.seconds:.2f}s", highlight=False)
    sys.exit(0 if result.equal else 1)
