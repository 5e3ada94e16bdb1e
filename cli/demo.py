"""`cajasync demo`: a store day with a live display, ending with the reconciliation table."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cajasync.samples.demo import DemoPlan, DemoState, preflight, run_demo, terminal_counts
from cli.options import broker_option, settings_for
from cli.output import console, table


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-data"),
    show_default=True,
    help="Where the server and terminal SQLite files go (recreated).",
)
@click.option(
    "--sales", type=click.IntRange(min=10), default=120, show_default=True, help="Sales per till."
)
@broker_option
def demo(directory: Path, sales: int, broker_url: str) -> None:
    """A store day: a server and three tills, one cut off the network for a while."""
    settings = settings_for(broker_url, gap_grace_s=2.0, resend_after_s=10.0)
    plan = DemoPlan(sales_per_terminal=sales, payments_per_terminal=max(1, sales // 20))
    preflight(settings)  # no broker: one line saying so, before any display starts
    quiet = [logging.getLogger(name) for name in ("cajasync", "outbox", "inbox")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # reconnect warnings are part of the show: the display tells them
        logger.setLevel(logging.ERROR)
    try:
        with Live(Text("opening the store…"), console=console, refresh_per_second=4) as live:
            result = run_demo(
                directory, settings, plan=plan, on_tick=lambda state: live.update(_view(state))
            )
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    console.print()
    rows = result.operations
    table(
        "End of day, up: terminal vs server",
        ["terminal", "topic", "recorded on terminal", "held by server", "pending"],
        [[r.terminal, r.topic, r.recorded, r.held, r.pending] for r in rows],
    )
    table(
        "End of day, down: server vs terminal replica",
        ["terminal", "topic", "server", "terminal", "back-office changes seen"],
        [[r.terminal, r.topic, r.server, r.terminal_has, r.changes_seen] for r in result.replicas],
    )
    table(
        "End of day, Z closes: each till's Z against the sales the server holds",
        ["terminal", "Z", "receipts", "sales", "held", "total", "held total", "state"],
        [
            [
                z["terminal"],
                z["z_number"],
                f"{z['first_receipt']}..{z['last_receipt']}",
                z["sale_count"],
                z["found_count"],
                z["total"],
                z["found_total"],
                z["state"],
            ]
            for z in result.closes
        ],
    )
    unreconciled = [z for z in result.closes if z["state"] != "reconciled"]
    if unreconciled or not result.closes:
        for z in unreconciled:
            console.print(f"[red]{z['difference'] or z['state']}[/red]")
        console.print(f"[red]{len(unreconciled)} Z closes not reconciled[/red]")
        raise SystemExit(1)
    pending = sum(r.pending for r in rows)
    missing = sum(r.recorded - r.held for r in rows)
    stale = [
        r for r in result.replicas if r.server != r.terminal_has or not _all_seen(r.changes_seen)
    ]
    if stale:
        console.print(f"[red]{len(stale)} replica rows differ from the server[/red]")
        raise SystemExit(1)
    if pending or missing:
        console.print(
            f"[red]{pending} operations still pending, {missing} not held by the server[/red]"
        )
        raise SystemExit(1)
    console.print(
        "[green]all operations acknowledged: nothing pending, nothing lost, nothing twice; "
        "every Z close reconciled with the sales held[/green]"
    )


def _view(state: DemoState) -> Group:
    grid = Table(title=f"store day: {state.phase}", title_justify="left")
    for name in ("till", "kind", "network", "sold", "pending", "sent", "acked", "rejected"):
        grid.add_column(name, justify="left" if name in ("till", "kind", "network") else "right")
    for terminal in state.terminals:
        counts = terminal_counts(terminal)
        total = {
            s: sum(c.get(s, 0) for c in counts.values())
            for s in ("pending", "sent", "acked", "rejected")
        }
        network = "[green]online[/green]" if terminal.online else "[red]OFFLINE[/red]"
        grid.add_row(
            terminal.identity.terminal,
            terminal.identity.kind,
            network,
            f"{terminal.sold}/{terminal.sales}",
            *(str(total[s]) for s in ("pending", "sent", "acked", "rejected")),
        )
    return Group(grid, Text("\n".join(state.events[-6:]), style="dim"))


def _all_seen(fraction: str) -> bool:
    seen, total = fraction.split("/")
    return seen == total
