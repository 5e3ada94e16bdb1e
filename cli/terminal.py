"""`cajasync terminal …`: the till side."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from cajasync.core.credentials import read_credentials, save_credentials
from cajasync.core.db import opened
from cajasync.core.identity import TerminalIdentity
from cli.filters import age
from cli.options import (
    F,
    broker_option,
    json_option,
    metrics_port_option,
    terminal_db_option,
    terminal_settings,
    until_idle_option,
)
from cli.output import console, emit_json, table
from cli.progress import live_stats, stop_on_signals
from schemas.topics import TERMINAL_KINDS

ANSWER_TIMEOUT_S = 20.0


def say(line: str) -> None:
    """One line of what init or recover did, never wrapped (scripts and logs read it)."""
    console.print(line, soft_wrap=True, markup=False, highlight=False)


def timeout_option(func: F) -> F:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=ANSWER_TIMEOUT_S,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for the server's answer.",
    )(func)


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
@click.option(
    "--offline",
    "--no-broker",
    "offline",
    is_flag=True,
    help="Do not ask the server where this id's seqs continue (start at 1): only for an id "
    "the server has never seen.",
)
@click.option(
    "--credentials",
    "credentials",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The file `cajasync server terminal add --credentials-file` wrote: this till's own "
    "broker URL, kept beside its database (mode 0600) for every terminal command.",
)
@timeout_option
def init(
    db: str,
    terminal_id: str,
    location: str,
    pos: str,
    kind: str,
    broker_url: str,
    offline: bool,
    credentials: Path | None,
    timeout: float,
) -> None:
    """Create the outbox in the terminal database and declare its broker queue (idempotent).

    A new database asks the server where this terminal id's seqs continue (a till rebuilt
    after losing its disk continues after what the server holds) and refuses when the server
    cannot be asked, unless --offline.
    """
    from cajasync.processes.recover import start_terminal

    identity = TerminalIdentity(terminal_id, location, pos, kind)
    if credentials is not None:
        kept = save_credentials(db, read_credentials(credentials, terminal_id))
        say(f"terminal {terminal_id}: its own broker URL is kept in {kept} (mode 0600)")
    started = start_terminal(
        db, identity, terminal_settings(db, broker_url), offline=offline, timeout=timeout
    )
    if started.offline and not started.existing:
        say(
            f"terminal {terminal_id} set up --offline, without asking the server: it starts at "
            f"seq 1; if the server already knows {terminal_id}, its sales will be rejected "
            f"until you run `cajasync terminal recover --db {db} --id {terminal_id}`"
        )
    elif started.mark is not None and started.mark.start_seq:
        known = started.mark.start_seq
        say(
            f"terminal {terminal_id} is known to the server up to seq {known}: "
            f"this till continues at {known + 1}"
        )
    elif started.mark is not None:
        say(f"terminal {terminal_id} is new to the server: this till starts at seq 1")
    say(f"terminal {terminal_id} ready ({kind}, location {location}, pos {pos}) in {db}")


@terminal.command("recover")
@terminal_db_option
@click.option("--id", "terminal_id", required=True, help="Terminal id, e.g. T001.")
@broker_option
@timeout_option
def recover(db: str, terminal_id: str, broker_url: str, timeout: float) -> None:
    """Bring a till database restored from a backup (or whose outbox was lost) in line with
    the server: continue after its high-water seq, renumber unacknowledged operations whose
    seq the server holds for another operation, register a new incarnation."""
    from cajasync.processes.recover import recover_terminal

    done = recover_terminal(db, terminal_id, terminal_settings(db, broker_url), timeout=timeout)
    mark = done.mark
    say(
        f"terminal {terminal_id}: the server holds up to seq {mark.max_seq} (contiguous "
        f"{mark.contiguous_seq}, {mark.held} held); this database was at seq {done.was_at} "
        f"and continues at {done.now_at + 1} as incarnation {mark.incarnation}"
    )
    if done.renumbered:
        moves = ", ".join(f"{old}->{new}" for old, new in done.renumbered[:10])
        more = f" and {len(done.renumbered) - 10} more" if len(done.renumbered) > 10 else ""
        say(
            f"renumbered {len(done.renumbered)} unacknowledged operation(s) whose seq the "
            f"server holds for another operation: {moves}{more}"
        )
    say(
        f"{done.kept} unacknowledged operation(s) keep their seq ({done.already_held} already "
        "held by the server: they will be acknowledged)"
    )


@terminal.command("run")
@terminal_db_option
@broker_option
@until_idle_option
@metrics_port_option
def run(db: str, broker_url: str, until_idle: float | None, metrics_port: int | None) -> None:
    """Relay pending operations up, apply receipts, answer replay requests."""
    from cajasync.processes.terminal import run_terminal

    settings = terminal_settings(db, broker_url)
    with opened(db, "terminal") as engine, live_stats("terminal") as on_progress:
        stats = run_terminal(
            engine,
            settings,
            until_idle=until_idle,
            stop=stop_on_signals(),
            on_progress=on_progress,
            metrics_port=metrics_port,
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
    from cajasync.samples.simulate import simulate

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


@terminal.command("status")
@terminal_db_option
@json_option
def status_cmd(db: str, as_json: bool) -> None:
    """What this till would report to the server: operations pending by state and the
    oldest's age, each down stream's position, the last pull, the cajasync version
    (local only; `cajasync server terminals` shows the server's view)."""
    from cajasync.processes.till_status import till_status

    with opened(db, "terminal") as engine:
        status = till_status(engine)
    if as_json:
        emit_json(status)
        return
    now = dt.datetime.now(dt.UTC)
    oldest = status.oldest_pending
    pull = status.last_pull_at
    say(f"terminal {status.terminal} (cajasync {status.version})")
    table(
        "Pending operations",
        ["state", "operations"],
        [[state, n] for state, n in sorted(status.pending.items())] or [["—", 0]],
    )
    oldest_age = "—" if oldest is None else f"{age((now - oldest).total_seconds())} old"
    say(
        f"oldest pending: {oldest_age}; "
        f"last pull: {pull.isoformat(timespec='seconds') if pull else 'never'}"
        + (f" ({status.last_pull_status})" if status.last_pull_status else "")
    )
    table("Down streams", ["stream", "position"], sorted(status.streams.items()))
