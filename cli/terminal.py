"""`cajasync terminal …`: the till side."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from cajasync.db import opened
from cli.options import broker_option, settings_for, terminal_db_option, until_idle_option
from cli.output import console
from cli.progress import live_stats, stop_on_signals
from outbox.identity import TerminalIdentity
from schemas.topics import TERMINAL_KINDS


@click.group()
def terminal() -> None:
    """Set up, run and exercise a terminal (caja)."""


@terminal.command("init")
@terminal_db_option
@click.option("--id", "terminal_id", required=True, help="Terminal id, e.g. T001.")
@click.option("--location", required=True, help="Location (store / stock location) id.")
@click.option("--pos", required=True, help="Point of sale id.")
@click.option("--kind", type=click.Choice(TERMINAL_KINDS), default="retail", show_default=True)
@broker_option
@click.option("--no-broker", is_flag=True, help="Only prepare the database (offline install).")
def init(
    db: str, terminal_id: str, location: str, pos: str, kind: str, broker_url: str, no_broker: bool
) -> None:
    """Create the outbox in the terminal database and declare its broker queue (idempotent)."""
    from outbox.setup import init_terminal

    identity = TerminalIdentity(terminal_id, location, pos, kind)
    init_terminal(db, identity, settings_for(broker_url), declare=not no_broker)
    console.print(f"terminal {terminal_id} ready ({kind}, location {location}, pos {pos}) in {db}")


@terminal.command("run")
@terminal_db_option
@broker_option
@until_idle_option
def run(db: str, broker_url: str, until_idle: float | None) -> None:
    """Relay pending operations up, apply receipts, answer replay requests."""
    from outbox.relay import run_terminal

    settings = settings_for(broker_url)
    with opened(db, "terminal") as engine, live_stats("terminal") as on_progress:
        stats = run_terminal(
            engine, settings, until_idle=until_idle, stop=stop_on_signals(), on_progress=on_progress
        )
    console.print(f"terminal stopped: {stats}")


@terminal.command("simulate")
@terminal_db_option
@click.option("--sales", type=click.IntRange(min=0), required=True, help="Sales to ring up.")
@click.option("--payments", type=click.IntRange(min=0), default=0, help="Cash payments out.")
@click.option("--z-close", is_flag=True, help="End with a Z close of the sales since the last one.")
@click.option("--weekly-file", is_flag=True, help="Also record a weekly fiscal file.")
@click.option("--void-ratio", type=click.FloatRange(0, 1), default=0.02, show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed, for repeatable runs.")
def simulate_cmd(
    db: str,
    sales: int,
    payments: int,
    z_close: bool,
    weekly_file: bool,
    void_ratio: float,
    seed: int | None,
) -> None:
    """Record a realistic stream of operations through the same API a POS uses."""
    from outbox.simulate import simulate

    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with (
        opened(db, "terminal") as engine,
        Progress(*columns, console=console, transient=True) as progress,
    ):
        task = progress.add_task("recording", total=sales + payments)
        result = simulate(
            engine,
            sales=sales,
            payments=payments,
            z_close=z_close,
            weekly_file=weekly_file,
            void_ratio=void_ratio,
            seed=seed,
            on_step=lambda _topic: progress.advance(task),
        )
    recorded = ", ".join(f"{n} {topic}" for topic, n in sorted(result.recorded.items()))
    console.print(f"recorded {recorded} ({result.voided} sales voided as new versions)")
