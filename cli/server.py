"""`cajasync server …`: the back-office side."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from cajasync.core.db import opened
from cajasync.core.server_tables import Z_STATES
from cajasync.core.settings import load_settings
from cli.filters import Duration, age, period_of, period_options, timezone_option
from cli.options import (
    broker_option,
    json_option,
    management_option,
    metrics_port_option,
    server_db_option,
    settings_for,
    until_idle_option,
)
from cli.output import console, emit_json, table
from cli.progress import live_stats, stop_on_signals
from cli.sales import server_ventas
from cli.server_terminals import terminals as terminal_registry


@click.group()
def server() -> None:
    """Run and inspect the server inbox."""


server.add_command(terminal_registry)
server.add_command(server_ventas)


@server.command("init")
@server_db_option
@broker_option
@click.option("--no-broker", is_flag=True, help="Only migrate the database.")
@management_option
@click.option(
    "--no-policies",
    is_flag=True,
    help="Declare the topology but set no policy (a broker without the management API).",
)
@click.option(
    "--migrate-fanout",
    is_flag=True,
    help="Unbind the chain's and the locations' change keys from every till's queue: those "
    "changes come by stream. Run it once every till runs a version that reads the streams.",
)
def init(
    db: str,
    broker_url: str,
    no_broker: bool,
    management_url: str,
    no_policies: bool,
    migrate_fanout: bool,
) -> None:
    """Create or migrate the server store, declare the broker topology (with the change
    streams of the chain and of every registered location) and set the dead-letter policy
    of the server's queues through the management API (idempotent)."""
    from cajasync.processes.server_init import init_server

    if migrate_fanout and no_broker:
        raise click.UsageError("--migrate-fanout changes the broker: drop --no-broker")
    settings = settings_for(broker_url, management_url=management_url)
    done = init_server(
        db,
        settings,
        declare=not no_broker,
        policies=not no_policies,
        migrate_fanout=migrate_fanout,
    )
    said = "" if no_broker else "; topology declared" + ("" if no_policies else ", policies set")
    console.print(f"server store ready at {db}{said}")
    if done.streams:
        console.print(f"change streams: {', '.join(done.streams)}")
    if migrate_fanout:
        keys = sum(done.unbound.values())
        console.print(
            f"fan-out migrated: {keys:,} shared-scope keys unbound from "
            f"{len(done.unbound):,} till queues (the tills read the streams)"
        )


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
@metrics_port_option
def run(
    db: str,
    broker_url: str,
    until_idle: float | None,
    allow_shared_user: bool,
    metrics_port: int | None,
) -> None:
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
            metrics_port=metrics_port,
            claim=True,
        )
    console.print(f"server stopped: {stats}")


@server.command("stats")
@server_db_option
@json_option
def stats(db: str, as_json: bool) -> None:
    """Per terminal: highest contiguous seq held, operations held per topic (a weekly file
    counts once; the chunks it came in are counted apart), seqs recorded
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
            "weekly chunks",
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
                row["weekly_chunks"],
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


@server.command("z-report")
@server_db_option
@click.option("--terminal", default=None, metavar="T", help="Only this terminal's Z closes.")
@period_options
@timezone_option
@click.option(
    "--state",
    type=click.Choice(Z_STATES),
    default=None,
    help="Only Z closes in this state.",
)
@json_option
def z_report(
    db: str,
    terminal: str | None,
    since: str | None,
    until: str | None,
    timezone: str | None,
    state: str | None,
    as_json: bool,
) -> None:
    """Z closes received and how they compare with the sales held: reconciled, waiting
    (sales missing, asked of the till) or discrepancy (with the difference). --since and
    --until filter by the end of the Z's period."""
    from inbox.zreconcile import z_report as read_z_report

    period = period_of(since, until, timezone)
    with opened(db, "server") as engine:
        rows = read_z_report(engine, terminal=terminal, period=period, state=state)
    if as_json:
        emit_json(rows)
        return
    table(
        f"Z closes ({period.describe()})",
        [
            "terminal",
            "Z",
            "period end",
            "receipts",
            "state",
            "sales",
            "held",
            "total",
            "held total",
            "missing",
            "asked",
            "difference",
        ],
        [
            [
                row["terminal"],
                row["z_number"],
                row["period_end"],
                f"{row['first_receipt']}..{row['last_receipt']}",
                row["state"],
                row["sale_count"],
                row["found_count"],
                row["total"],
                row["found_total"],
                ", ".join(str(n) for n in row["missing"]) or None,
                row["replay_asked"],
                row["difference"] or None,
            ]
            for row in rows
        ],
    )


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


@server.command("compact")
@server_db_option
@click.option("--dry-run", is_flag=True, help="Only show what would be dropped.")
@json_option
def compact(db: str, dry_run: bool, as_json: bool) -> None:
    """Drop the change-log entries every till has passed (its reported position), keeping
    the latest CAJASYNC_CHANGELOG_KEEP changes of each stream and those younger than
    CAJASYNC_CHANGELOG_KEEP_S. A till further behind gets a refresh of the stream instead
    of a catch-up, by itself. `server run` does this every CAJASYNC_COMPACT_INTERVAL_S."""
    from outbox.compaction import compact as compact_log
    from outbox.compaction import retention_of

    settings = load_settings()
    with opened(db, "server") as engine:
        report = compact_log(engine, retention_of(settings), dry_run=dry_run)
    if as_json:
        emit_json(report.as_json())
        return
    verb = "would drop" if dry_run else "dropped"
    table(
        f"Change log: {report.rows_before} change(s), {verb} {report.dropped}",
        ["stream", "head", "compacted to", "new floor", verb, "floor set by"],
        [
            [s.stream, s.head, s.before, s.floor, s.dropped, s.held_by]
            for s in report.streams
            if s.floor > s.before or dry_run
        ],
    )


@server.command("archive")
@server_db_option
@click.option(
    "--before",
    required=True,
    metavar="YYYY-MM",
    help="Archive the operations recorded before this month (a month already over).",
)
@click.option("--yes", is_flag=True, help="Move them (without it, only show what would move).")
@json_option
def archive(db: str, before: str, yes: bool, as_json: bool) -> None:
    """Move the operations of past months from server_operations to
    server_operations_archive, a month at a time; their dedup rows stay, so a late
    duplicate is still recognised. Chunks of weekly files not complete and the operations
    of a till whose Z close is still waiting stay live."""
    from inbox.archive import archive as archive_operations
    from inbox.archive import month_start

    start = month_start(before)
    with opened(db, "server") as engine:
        report = archive_operations(engine, start, dry_run=not yes)
    if as_json:
        emit_json(report.as_json())
        return
    verb = "moved" if yes else "would move"
    table(
        f"Operations recorded before {report.before}: {verb} {report.moved}",
        ["month", verb],
        [[month, count] for month, count in report.months.items()],
    )
    if report.kept:
        console.print(f"{report.kept} kept live (weekly file incomplete or Z close waiting)")
    if not yes and report.moved:
        console.print("nothing moved; run again with --yes")
