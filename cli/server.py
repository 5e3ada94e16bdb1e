"""`cajasync server …`: the back-office side."""

from __future__ import annotations

from typing import Any

import click

from cajasync.core.db import opened
from cli.options import (
    broker_option,
    json_option,
    server_db_option,
    settings_for,
    until_idle_option,
)
from cli.output import console, emit_json, table
from cli.progress import live_stats, stop_on_signals
from cli.server_terminals import terminals


@click.group()
def server() -> None:
    """Run and inspect the server inbox."""


server.add_command(terminals)


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
@click.option(
    "--allow-shared-user",
    is_flag=True,
    envvar="CAJASYNC_ALLOW_SHARED_USER",
    help="Accept tills publishing as the shared broker user (guest) and unregistered tills "
    "(they say where they are themselves). Without it, only registered tills with their own "
    "broker user are served.",
)
def run(db: str, broker_url: str, until_idle: float | None, allow_shared_user: bool) -> None:
    """Ingest operations (receipts, gap replays), answer snapshot / catch-up / image
    requests, and publish the catalog's change log to the terminals.

    The vhost is claimed for this store: a vhost another store serves is refused."""
    from cajasync.processes.server import serve

    settings = settings_for(broker_url, allow_shared_user=allow_shared_user)
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
            claim=True,
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
