"""`cajasync server …`: the back-office side."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from cajasync.core.db import opened
from cli.filters import Duration, age
from cli.options import (
    broker_option,
    json_option,
    metrics_port_option,
    server_db_option,
    settings_for,
    until_idle_option,
)
from cli.output import console, emit_json, table
from cli.progress import live_stats, stop_on_signals


@click.group()
def server() -> None:
    """Run and inspect the server inbox."""


@server.command("init")
@server_db_option
@broker_option
@click.option("--no-broker", is_flag=True, help="Only migrate the database.")
def init(db: str, broker_url: str, no_broker: bool) -> None:
    """Create or migrate the server store and declare the broker topology (idempotent)."""
    from cajasync.processes.server_init import init_server

    init_server(db, settings_for(broker_url), declare=not no_broker)
    console.print(f"server store ready at {db}" + ("" if no_broker else "; topology declared"))


@server.command("run")
@server_db_option
@broker_option
@until_idle_option
@metrics_port_option
def run(db: str, broker_url: str, until_idle: float | None, metrics_port: int | None) -> None:
    """Ingest operations (receipts, gap replays), answer snapshot / catch-up / image
    requests, and publish the catalog's change log to the terminals."""
    from cajasync.processes.server import serve

    settings = settings_for(broker_url)
    stop = stop_on_signals()
    # a database that is not up yet is waited for, as the loops wait out an outage
    with (
        opened(db, "server", waiting=settings, stop=stop) as engine,
        live_stats("server") as on_progress,
    ):
        stats = serve(
            engine,
            settings,
            until_idle=until_idle,
            stop=stop,
            on_progress=on_progress,
            metrics_port=metrics_port,
        )
    console.print(f"server stopped: {stats}")


@server.command("stats")
@server_db_option
@json_option
def stats(db: str, as_json: bool) -> None:
    """Per terminal: highest contiguous seq held, operations held per topic, seqs recorded
    lost (missing below where a rebuilt till restarted), the first open gap (since when,
    how many times the till was asked to replay it), and operations refused as coming from
    a second live copy of the terminal (see `terminal init`)."""
    from inbox.ingest import server_stats

    with opened(db, "server") as engine:
        data = server_stats(engine)
    if as_json:
        emit_json(data)
        return
    topics = sorted({t for row in data["terminals"] for t in row["topics"]})
    table(
        "Server store",
        [
            "terminal",
            "contiguous seq",
            "max seq",
            *topics,
            "lost seqs",
            "open gap",
            "gap open since",
            "gap asked",
            "second-copy ops refused",
        ],
        [
            [
                row["terminal"],
                row["contiguous_seq"],
                row["max_seq"],
                *(row["topics"].get(t, 0) for t in topics),
                row["lost_seqs"],
                *_gap_cells(row["gap"]),
                row["copy_ops_rejected"],
            ]
            for row in data["terminals"]
        ],
    )


def _gap_cells(gap: dict[str, Any] | None) -> list[Any]:
    """Seqs, open since and times asked of a terminal's open gap (dashes when none is)."""
    if gap is None:
        return [None, None, None]
    return [f"{gap['from_seq']}..{gap['to_seq']}", gap["open_since"], gap["asked"]]


@server.command("terminals")
@server_db_option
@click.option(
    "--behind", is_flag=True, help="Only tills with operations pending or changes not applied."
)
@click.option(
    "--silent-for",
    type=Duration(),
    default=None,
    metavar="DURATION",
    help="Only tills not heard of for this long (30s, 10m, 2h, 1d); also what counts as "
    "silent (default 10m).",
)
@json_option
def terminals(db: str, behind: bool, silent_for: dt.timedelta | None, as_json: bool) -> None:
    """Every till the server knows: last contact, operations pending and the oldest's age,
    changes not yet applied per topic (down lag), cajasync version. A till that never
    connected shows as such."""
    from inbox.status import DEFAULT_SILENT_AFTER, OK, fleet

    with opened(db, "server") as engine:
        tills = fleet(engine, silent_after=silent_for or DEFAULT_SILENT_AFTER)
    if silent_for is not None:
        tills = [till for till in tills if till.state != OK]
    if behind:
        tills = [till for till in tills if till.behind]
    if as_json:
        emit_json({"terminals": [till.as_dict() for till in tills]})
        return
    table(
        f"Terminals ({len(tills)})",
        ["terminal", "state", "last contact", "version", "pending", "oldest pending", "down lag"],
        [
            [
                till.terminal,
                till.state,
                None if till.silent_s is None else f"{age(till.silent_s)} ago",
                till.version,
                till.pending_total,
                age(till.oldest_pending_age_s),
                _lag_cell(till.lag),
            ]
            for till in tills
        ],
    )


def _lag_cell(lag: dict[str, int]) -> str:
    """`productos 3, stock 1`, or 0 when every followed stream is up to date."""
    behind = [f"{topic} {n}" for topic, n in sorted(lag.items()) if n]
    return ", ".join(behind) if behind else "0"
