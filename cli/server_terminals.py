"""`cajasync server terminal …`: the terminal registry and each till's broker user."""

from __future__ import annotations

from pathlib import Path

import click

from cajasync.core.db import opened
from cajasync.core.identity import TerminalIdentity
from cli.options import F, broker_option, json_option, server_db_option, settings_for
from cli.output import console, emit_json, table
from schemas.topics import TERMINAL_KINDS

COLUMNS = ("terminal", "location", "pos", "kind", "status", "broker user", "added", "revoked")


def management_option(func: F) -> F:
    return click.option(
        "--management-url",
        envvar="CAJASYNC_MANAGEMENT_URL",
        default="http://localhost:15672",
        show_default=True,
        help="RabbitMQ management API (creates and deletes terminal users).",
    )(func)


def credentials_option(func: F) -> F:
    return click.option(
        "--credentials-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write the till's broker URL to this file (mode 0600) instead of printing it.",
    )(func)


@click.group("terminal")
def terminals() -> None:
    """Register terminals: where each one is, its own broker user, revoke and rotate."""


@terminals.command("add")
@click.argument("terminal_id")
@click.option("--location", required=True, help="Location (store / stock location) id.")
@click.option("--pos", required=True, help="Point of sale id.")
@click.option("--kind", type=click.Choice(TERMINAL_KINDS), default="retail", show_default=True)
@click.option(
    "--shared-user",
    is_flag=True,
    help="Create no broker user: the till keeps the shared one (needs --allow-shared-user).",
)
@credentials_option
@server_db_option
@broker_option
@management_option
def add(
    terminal_id: str,
    location: str,
    pos: str,
    kind: str,
    shared_user: bool,
    credentials_file: Path | None,
    db: str,
    broker_url: str,
    management_url: str,
) -> None:
    """Register a terminal, create its broker user and bind its queue by its scopes."""
    from cajasync.processes.fleet import add_terminal

    identity = TerminalIdentity(terminal_id, location, pos, kind)
    settings = settings_for(broker_url, management_url=management_url)
    with opened(db, "server") as engine:
        added = add_terminal(engine, settings, identity, broker_user=not shared_user)
    console.print(f"terminal {terminal_id} registered ({kind}, location {location}, pos {pos})")
    _hand_over(terminal_id, added.broker_url, credentials_file)


@terminals.command("list")
@server_db_option
@json_option
def list_(db: str, as_json: bool) -> None:
    """Every registered terminal."""
    from inbox.registry import registrations

    with opened(db, "server") as engine:
        found = list(registrations(engine).values())
    if as_json:
        emit_json({"terminals": [r.as_dict() for r in found]})
        return
    table("Registered terminals", COLUMNS, [_row(r.as_dict()) for r in found])


@terminals.command("show")
@click.argument("terminal_id")
@server_db_option
@json_option
def show(terminal_id: str, db: str, as_json: bool) -> None:
    """One registered terminal."""
    from inbox.registry import require

    with opened(db, "server") as engine:
        found = require(engine, terminal_id).as_dict()
    if as_json:
        emit_json(found)
        return
    table(f"Terminal {terminal_id}", ["field", "value"], [[k, v] for k, v in found.items()])


@terminals.command("move")
@click.argument("terminal_id")
@click.option("--location", default=None, help="Its new location.")
@click.option("--pos", default=None, help="Its new point of sale.")
@click.option("--kind", type=click.Choice(TERMINAL_KINDS), default=None, help="Its new kind.")
@server_db_option
@broker_option
@management_option
def move(
    terminal_id: str,
    location: str | None,
    pos: str | None,
    kind: str | None,
    db: str,
    broker_url: str,
    management_url: str,
) -> None:
    """Change where a terminal is; its queue is rebound (the old scopes unbound)."""
    from cajasync.processes.fleet import move_terminal

    if location is None and pos is None and kind is None:
        raise click.UsageError("say what changes: --location, --pos and/or --kind")
    settings = settings_for(broker_url, management_url=management_url)
    with opened(db, "server") as engine:
        moved = move_terminal(engine, settings, terminal_id, location=location, pos=pos, kind=kind)
    console.print(
        f"terminal {terminal_id} now {moved.kind}, location {moved.location}, pos {moved.pos}; "
        "its queue is rebound"
    )


@terminals.command("revoke")
@click.argument("terminal_id")
@server_db_option
@broker_option
@management_option
def revoke(terminal_id: str, db: str, broker_url: str, management_url: str) -> None:
    """Refuse a terminal from now on: its broker user is deleted, its connections closed."""
    from cajasync.processes.fleet import revoke_terminal

    settings = settings_for(broker_url, management_url=management_url)
    with opened(db, "server") as engine:
        revoked = revoke_terminal(engine, settings, terminal_id)
    console.print(
        f"terminal {terminal_id} revoked on {revoked.as_dict()['revoked_at']}: what it sent "
        "stays, anything new is refused"
    )


@terminals.command("rotate")
@click.argument("terminal_id")
@credentials_option
@server_db_option
@broker_option
@management_option
def rotate(
    terminal_id: str,
    credentials_file: Path | None,
    db: str,
    broker_url: str,
    management_url: str,
) -> None:
    """A new broker password for a terminal (its connections with the old one are closed)."""
    from cajasync.processes.fleet import rotate_terminal

    settings = settings_for(broker_url, management_url=management_url)
    with opened(db, "server") as engine:
        rotated = rotate_terminal(engine, settings, terminal_id)
    console.print(f"terminal {terminal_id}: new broker password")
    _hand_over(terminal_id, rotated.broker_url, credentials_file)


def _hand_over(terminal: str, broker_url: str | None, path: Path | None) -> None:
    """Print the till's broker URL, or write it to `path` (mode 0600)."""
    from cajasync.processes.fleet import write_credentials

    if broker_url is None:
        console.print(f"terminal {terminal} keeps the shared broker user")
        return
    hint = f"`cajasync terminal init --credentials FILE ... --id {terminal}` on the till"
    if path is None:
        click.echo(broker_url)
        console.print(f"give the till this broker URL ({hint})", soft_wrap=True)
        return
    write_credentials(path, broker_url)
    console.print(f"broker URL written to {path} (mode 0600): {hint}", soft_wrap=True)


def _row(data: dict[str, object]) -> list[object]:
    keys = ("terminal", "location", "pos", "kind", "status", "broker_user")
    return [*(data[k] for k in keys), data["added_at"], data["revoked_at"]]
