"""`cajasync dead …`: the dead letters (`cajasync.dead`), for operators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from cajasync.broker.dead import (
    DeadLetter,
    Selection,
    list_dead,
    purge_dead,
    replay_dead,
)
from cajasync.errors import CajasyncError
from cli.options import broker_option, json_option, settings_for
from cli.output import console, emit_json, table


@click.group()
def dead() -> None:
    """Messages the server could not take, with their reason: list, show, replay, purge."""


def _filters(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        (
            click.option("--reason", help="Only dead letters whose reason holds this text."),
            click.option("--terminal", help="Only this terminal's."),
            click.option("--queue", help="Only those taken from this queue (cajasync.ops…)."),
        )
    ):
        func = option(func)
    return func


@dead.command("list")
@broker_option
@_filters
@click.option("--limit", type=click.IntRange(min=1), default=None)
@json_option
def list_cmd(
    broker_url: str,
    reason: str | None,
    terminal: str | None,
    queue: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List dead letters, oldest first (nothing leaves the queue)."""
    selection = Selection(reason=reason, terminal=terminal, queue=queue)
    letters = list_dead(settings_for(broker_url), selection, limit=limit)
    if as_json:
        emit_json(letters)
        return
    table(
        f"Dead letters ({len(letters)})",
        ["id", "queue", "terminal", "routing key", "dead at", "bytes", "reason"],
        [
            [
                letter.id,
                letter.queue,
                letter.terminal,
                letter.routing_key,
                letter.dead_at.strftime("%Y-%m-%d %H:%M:%S") if letter.dead_at else None,
                letter.size,
                letter.reason,
            ]
            for letter in letters
        ],
    )


@dead.command("show")
@broker_option
@click.argument("letter_id", metavar="ID")
@json_option
def show_cmd(broker_url: str, letter_id: str, as_json: bool) -> None:
    """One dead letter: its headers, its reason and its body decoded when it decodes."""
    letters = list_dead(
        settings_for(broker_url), Selection(ids=frozenset({letter_id})), decoded=True
    )
    if not letters:
        raise CajasyncError(f"no dead letter {letter_id} in cajasync.dead")
    if as_json:
        emit_json(letters if len(letters) > 1 else letters[0])
        return
    for letter in letters:
        _show(letter)


def _show(letter: DeadLetter) -> None:
    table(
        f"Dead letter {letter.id}",
        ["field", "value"],
        [
            ["reason", letter.reason],
            ["queue", letter.queue],
            ["terminal", letter.terminal],
            ["routing key", letter.routing_key],
            ["message id", letter.message_id],
            ["user id", letter.user_id],
            ["dead at", letter.dead_at.isoformat() if letter.dead_at else None],
            ["bytes", letter.size],
            *([f"header {k}", v] for k, v in sorted(letter.headers.items())),
        ],
    )
    if letter.body is None:
        console.print("body: does not decode as an operation or a request")
    else:
        console.print_json(data=letter.body, default=str)


def _selection(
    ids: tuple[str, ...], every: bool, reason: str | None, terminal: str | None, queue: str | None
) -> Selection:
    selection = Selection(ids=frozenset(ids), reason=reason, terminal=terminal, queue=queue)
    if every and selection.narrows:
        raise click.UsageError("--all takes no IDs and no filters")
    if not every and not selection.narrows:
        raise click.UsageError("give IDs, a filter (--reason, --terminal, --queue) or --all")
    return selection


_COLUMNS = (
    *Progress.get_default_columns()[:1],
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)


@dead.command("replay")
@broker_option
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "every", is_flag=True, help="Every dead letter.")
@_filters
@json_option
def replay_cmd(
    broker_url: str,
    ids: tuple[str, ...],
    every: bool,
    reason: str | None,
    terminal: str | None,
    queue: str | None,
    as_json: bool,
) -> None:
    """Send dead letters back to the queue they came from (the server deduplicates)."""
    selection = _selection(ids, every, reason, terminal, queue)
    with Progress(*_COLUMNS, console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("replaying", total=None)
        done = replay_dead(
            settings_for(broker_url),
            selection,
            progress=lambda n, total: progress.update(task, completed=n, total=total),
        )
    _report(done, "replayed", as_json)


@dead.command("purge")
@broker_option
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "every", is_flag=True, help="Every dead letter.")
@_filters
@click.option("--yes", is_flag=True, help="Delete them (without it: show what would go).")
@json_option
def purge_cmd(
    broker_url: str,
    ids: tuple[str, ...],
    every: bool,
    reason: str | None,
    terminal: str | None,
    queue: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete dead letters for good; without --yes, list what would be deleted."""
    selection = _selection(ids, every, reason, terminal, queue)
    settings = settings_for(broker_url)
    if not yes:
        letters = list_dead(settings, selection)
        if as_json:
            emit_json({"would_delete": letters})
            return
        _listing(letters, f"Would delete {len(letters)} dead letters (add --yes)")
        return
    with Progress(*_COLUMNS, console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("purging", total=None)
        done = purge_dead(
            settings,
            selection,
            progress=lambda n, total: progress.update(task, completed=n, total=total),
        )
    _report(done, "deleted", as_json)


def _listing(letters: list[DeadLetter], title: str) -> None:
    table(
        title,
        ["id", "queue", "terminal", "reason"],
        [[x.id, x.queue, x.terminal, x.reason] for x in letters],
    )


def _report(done: list[DeadLetter], verb: str, as_json: bool) -> None:
    if as_json:
        emit_json({verb: done})
        return
    _listing(done, f"{len(done)} dead letters {verb}")
