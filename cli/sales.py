"""`cajasync ventas` and `cajasync server ventas`: the sales (and payments, Z closes,
weekly files) a till recorded, what state each is in, and what the server holds of it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import click

from cajasync.core.db import opened
from cajasync.core.periods import zone
from cajasync.errors import ConfigError
from cajasync.processes.questions import held_lookup
from cli.filters import (
    customer_number_options,
    period_of,
    period_options,
    till_period,
    timezone_option,
)
from cli.options import (
    broker_option,
    json_option,
    server_db_option,
    settings_for,
    terminal_db_option,
)
from cli.output import emit_json, table
from inbox.server_views import (
    ServerFileView,
    ServerFilters,
    ServerListing,
    ServerOpView,
    list_server_operations,
)
from outbox.views import FileView, Filters, Listing, OpView, ServerHeld, list_operations
from schemas.topics import CASH_PAYMENTS, SALES, WEEKLY_FILES, Z_CLOSES

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_LIMIT = 50
NOT_ASKED = "not asked"
TOPIC_HELP = "ventas (default), pagos, cierres-z, archivos-semanales (or English alias)."


def page_options(func: F) -> F:
    """`--limit N` (default 50) and `--all`."""
    func = click.option("--all", "show_all", is_flag=True, help="Every match, no page.")(func)
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=DEFAULT_LIMIT,
        show_default=True,
        help="Newest this many.",
    )(func)


@click.command("ventas")
@terminal_db_option
@click.option("--topic", default=SALES, help=TOPIC_HELP)
@period_options
@timezone_option
@click.option("--state", help="pending, sent, acked, rejected or purged.")
@customer_number_options
@page_options
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, help="Skip this many newest (a page)."
)
@click.option("--local", is_flag=True, help="Do not ask the server what it holds.")
@broker_option
@json_option
def ventas(
    db: str,
    topic: str,
    since: str | None,
    until: str | None,
    timezone: str | None,
    state: str | None,
    customer: str | None,
    number: int | None,
    limit: int,
    show_all: bool,
    offset: int,
    local: bool,
    broker_url: str,
    as_json: bool,
) -> None:
    """The till's sales (or --topic pagos / cierres-z / archivos-semanales), newest first:
    ticket, date, total, customer, local state, and what the server holds of each."""
    with opened(db, "terminal") as engine:
        period, tz = till_period(engine, since, until, timezone)
        filters = Filters(period, state, customer, number, None if show_all else limit, offset)
        server = None if local else held_lookup(engine, settings_for(broker_url), topic)
        listing = list_operations(engine, topic, filters, server=server)
    if as_json:
        emit_json(listing)
        return
    title = f"{_title(listing.topic)} ({len(listing.rows)} shown of {listing.total})"
    if listing.server_note and not local:
        title += f"; server {listing.server_note}"
    columns, render = _till_layout(listing, tz)
    table(title, columns, [render(row) for row in listing.rows])


@click.command("ventas")
@server_db_option
@click.option("--terminal", help="Only this terminal's operations.")
@click.option("--topic", default=SALES, help=TOPIC_HELP)
@period_options
@timezone_option
@click.option(
    "--state", help="applied, stale or rejected (weekly files: partial, complete, corrupt)."
)
@customer_number_options
@page_options
@json_option
def server_ventas(
    db: str,
    terminal: str | None,
    topic: str,
    since: str | None,
    until: str | None,
    timezone: str | None,
    state: str | None,
    customer: str | None,
    number: int | None,
    limit: int,
    show_all: bool,
    as_json: bool,
) -> None:
    """The sales (or --topic pagos / cierres-z / archivos-semanales) the server holds,
    newest first: terminal, ticket, date, total, customer, version, when it arrived and
    its status (applied, stale, rejected with the reason)."""
    tz = _zone(timezone)
    period = period_of(since, until, timezone)
    filters = ServerFilters(terminal, period, state, customer, number, None if show_all else limit)
    with opened(db, "server") as engine:
        listing = list_server_operations(engine, topic, filters)
    if as_json:
        emit_json(listing)
        return
    title = f"Server: {_title(listing.topic)} ({len(listing.rows)} shown of {listing.total})"
    columns, render = _server_layout(listing, tz)
    table(title, columns, [render(row) for row in listing.rows])


# -- the till's table ----------------------------------------------------------------------

Row = list[Any]


def _till_layout(listing: Listing, tz: dt.tzinfo) -> tuple[list[str], Callable[[Any], Row]]:
    asked = listing.server_asked

    def server_cells(held: ServerHeld | None) -> Row:
        if not asked:
            return [NOT_ASKED, NOT_ASKED]
        if held is None:
            return [None, None]
        version = str(held.version) if held.status == "applied" else f"{held.version} {held.status}"
        return [version, when(held.received_at, tz)]

    def file_row(f: FileView) -> Row:
        chunks = f"{f.chunks_held}/{f.chunk_count if f.chunk_count is not None else '?'}"
        server: Row = [NOT_ASKED, NOT_ASKED]
        if asked:
            server = [
                f"{f.server_chunks}/{f.chunk_count}" if f.server_chunks else None,
                when(f.server_received_at, tz),
            ]
        name = f.file_name or "(purged: name not kept)"
        short = f.sha256[:12] if f.sha256 else None
        return [name, f.week, f.size, short, chunks, f.state, when(f.recorded_at, tz), *server]

    if listing.topic == WEEKLY_FILES:
        columns = ["file", "week", "size", "sha256", "chunks", "state", "recorded"]
        return [*columns, "server chunks", "received"], file_row

    def op_row(op: OpView) -> Row:
        return [
            op.seq,
            *business_cells(listing.topic, op.details, tz),
            op.state + (f": {op.last_error}" if op.state == "rejected" and op.last_error else ""),
            *server_cells(op.server),
            op.op_id,
        ]

    return [
        "seq",
        *BUSINESS_COLUMNS[listing.topic],
        "state",
        "server v",
        "received",
        "op_id",
    ], op_row


# -- the server's table --------------------------------------------------------------------


def _server_layout(listing: ServerListing, tz: dt.tzinfo) -> tuple[list[str], Callable[[Any], Row]]:
    if listing.topic == WEEKLY_FILES:

        def file_row(f: ServerFileView) -> Row:
            status = f.status + (f": {f.reason}" if f.reason else "")
            chunks = f"{f.chunks_held}/{f.chunk_count}"
            return [
                f.terminal,
                f.file_name,
                f.week,
                f.size,
                f.sha256[:12],
                chunks,
                status,
                when(f.recorded_at, tz),
                when(f.received_at, tz),
            ]

        columns = ["terminal", "file", "week", "size", "sha256", "chunks", "status"]
        return [*columns, "recorded", "received"], file_row

    def op_row(op: ServerOpView) -> Row:
        return [
            op.terminal,
            op.seq,
            *business_cells(listing.topic, op.details, tz),
            op.version,
            op.status + (f": {op.reason}" if op.reason else ""),
            when(op.received_at, tz),
            op.op_id,
        ]

    columns = [
        "terminal",
        "seq",
        *BUSINESS_COLUMNS[listing.topic],
        "v",
        "status",
        "received",
        "op_id",
    ]
    return columns, op_row


# -- shared --------------------------------------------------------------------------------

BUSINESS_COLUMNS: dict[str, list[str]] = {
    SALES: ["ticket", "date", "total", "customer"],
    CASH_PAYMENTS: ["date", "kind", "payee", "amount", "method"],
    Z_CLOSES: ["Z", "period", "sales", "total"],
}


def business_cells(topic: str, details: dict[str, Any], tz: dt.tzinfo) -> Row:
    """The business cells of an operation (dashes when its body is gone: purged; the
    reason in the first cell when its body does not decode)."""
    if not details:
        return [None] * len(BUSINESS_COLUMNS[topic])
    if "undecodable" in details:
        rest: Row = [None] * (len(BUSINESS_COLUMNS[topic]) - 1)
        return [f"<undecodable: {details['undecodable']}>", *rest]
    if topic == SALES:
        ticket = f"{details['book']}-{details['number']}"
        if details["kind"] == "return":
            ticket += " return"
        if details["voided"]:
            ticket += " VOID"
        return [ticket, when(details["date"], tz), details["total"], details["customer"]]
    if topic == CASH_PAYMENTS:
        payee = f"{details['payee_kind']} {details['payee']}"
        kind, amount, method = details["kind"], details["amount"], details["method"]
        return [when(details["date"], tz), kind, payee, amount, method]
    period = f"{when(details['period_start'], tz)} .. {when(details['period_end'], tz)}"
    return [details["number"], period, details["sale_count"], details["total"]]


def when(moment: dt.datetime | None, tz: dt.tzinfo) -> str | None:
    """A moment as the tables show it, in `tz`, to the minute."""
    return None if moment is None else moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _title(topic: str) -> str:
    return {
        SALES: "Ventas",
        CASH_PAYMENTS: "Pagos",
        Z_CLOSES: "Cierres Z",
        WEEKLY_FILES: "Archivos semanales",
    }[topic]


def _zone(timezone: str | None) -> dt.tzinfo:
    try:
        return zone(timezone)
    except ConfigError as exc:  # one usage line naming the zone
        raise click.UsageError(str(exc)) from None
