"""`cajasync tools …`: Herramientas, clean-up tools for technicians and supervisors."""

from __future__ import annotations

import datetime as dt
import os

import click
from sqlalchemy.engine import Engine

from cajasync.core.db import opened
from cajasync.core.periods import Period
from cajasync.errors import ConfigError
from cli.filters import DATE_HELP, timezone_option
from cli.options import json_option, terminal_db_option
from cli.output import console, emit_json, table
from cli.prune import prune
from inbox.replica_api import terminal_zone
from inbox.users import authorise_user
from outbox.purge import Purge, PurgePlan, TopicSpan, plan_purge, purge, purge_log

# For scripts; people are asked, the input hidden. A variable, not an option: an option's
# value would show in the process list.
PASSWORD_ENV = "CAJASYNC_PASSWORD"  # noqa: S105 (the variable's name, not a password)


@click.group()
def tools() -> None:
    """Herramientas: clean-up tools (each shows what it would do, and acts only with --yes)."""


tools.add_command(prune)


@tools.command("purge-synced")
@terminal_db_option
@click.option("--before", metavar="DATE", help=f"Only operations recorded before ({DATE_HELP}).")
@timezone_option
@click.option("--user", "user_name", required=True, help="Who purges (MASTER or ADMIN).")
@click.option("--yes", is_flag=True, help="Delete them (without it, only show what would go).")
@json_option
def purge_synced_cmd(
    db: str,
    before: str | None,
    timezone: str | None,
    user_name: str,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete operations the server has acknowledged (never a pending, sent or rejected one).

    The password is asked for (or read from CAJASYNC_PASSWORD); the user's role in the
    downloaded configuration must allow it. Every purge is logged (`cajasync tools purges`).
    """
    with opened(db, "terminal") as engine:
        tz = _zone(engine, timezone)
        try:
            bound = Period.before(before, tz)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        password = os.environ.get(PASSWORD_ENV) or click.prompt(
            f"password for {user_name}", hide_input=True, err=True
        )
        grant = authorise_user(engine, user_name, password)  # before anything is shown
        plan = plan_purge(engine, bound)
        done = purge(engine, plan, grant.user, grant.role) if yes and plan.rows else None
    if as_json:
        emit_json({"plan": plan, "rows": plan.rows, "deleted": done})
        return
    _show_plan(plan, tz)
    if done is not None:
        console.print(
            f"purge {done.id}: {done.rows} acknowledged operations deleted by {done.user} "
            "(`cajasync tools purges` lists the log)"
        )
    elif not plan.rows:
        console.print("nothing to delete")
    else:
        console.print("nothing deleted; run again with --yes")


@tools.command("purges")
@terminal_db_option
@timezone_option
@json_option
def purges_cmd(db: str, timezone: str | None, as_json: bool) -> None:
    """The purge log: who deleted synced operations, when, and how many per topic."""
    with opened(db, "terminal") as engine:
        tz = _zone(engine, timezone)
        log = purge_log(engine)
    if as_json:
        emit_json(log)
        return
    table(
        f"Purges ({len(log)})",
        ["id", "purged at", "user", "role", "before", "topic", "rows", "first", "last"],
        [
            [*_purge_columns(entry, tz), *_span_columns(span, tz)]
            for entry in log
            for span in _or_none(entry.topics)
        ],
    )


def _or_none(spans: list[TopicSpan]) -> list[TopicSpan | None]:
    return [*spans] if spans else [None]


def _zone(engine: Engine, timezone: str | None) -> dt.tzinfo:
    try:
        return terminal_zone(engine, timezone)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _show_plan(plan: PurgePlan, tz: dt.tzinfo) -> None:
    bound = "all dates" if plan.before is None else f"before {_when(plan.before, tz)}"
    table(
        f"Acknowledged operations to delete ({bound}): {plan.rows}",
        ["topic", "rows", "first", "last"],
        [_span_columns(span, tz) for span in plan.topics],
    )


def _purge_columns(entry: Purge, tz: dt.tzinfo) -> list[object]:
    before = None if entry.before is None else _when(entry.before, tz)
    return [entry.id, _when(entry.purged_at, tz), entry.user, entry.role, before]


def _span_columns(span: TopicSpan | None, tz: dt.tzinfo) -> list[object]:
    if span is None:  # a purge that found nothing left to delete
        return [None, 0, None, None]
    return [span.topic, span.rows, _when(span.first, tz), _when(span.last, tz)]


def _when(moment: dt.datetime, tz: dt.tzinfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
