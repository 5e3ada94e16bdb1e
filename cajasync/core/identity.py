"""Who this terminal is: one row written by `cajasync terminal init`."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import msgspec
import sqlalchemy as sa

from cajasync.core.terminal_tables import terminal as terminal_table
from cajasync.errors import ConfigError, NotInitialised, StoreError
from schemas.topics import TERMINAL_KINDS

_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")

_SET_UP = (
    "set the till up with `cajasync terminal init --db ... --id ... --location ... --pos ...`, "
    "which asks the server where a terminal id it already knows continues (a till restored "
    "from a backup: `cajasync terminal recover --db ... --id ...`)"
)
NO_TABLES = f"this database has no cajasync tables; {_SET_UP}"
NO_IDENTITY = f"this terminal database has no identity; {_SET_UP}"


class TerminalIdentity(msgspec.Struct, frozen=True):
    terminal: str
    location: str
    pos: str
    kind: str


def check_identity(identity: TerminalIdentity) -> None:
    """Raise ConfigError when an id cannot be used in routing keys or a kind is unknown."""
    for name in ("terminal", "location", "pos"):
        value = getattr(identity, name)
        if not _ID.fullmatch(value):
            raise ConfigError(
                f"{name} {value!r} must be 1-32 letters, digits, '-' or '_' (no dots or spaces)"
            )
    if identity.kind not in TERMINAL_KINDS:
        raise ConfigError(f"kind {identity.kind!r} must be one of {', '.join(TERMINAL_KINDS)}")


def save_identity(
    connection: sa.Connection,
    identity: TerminalIdentity,
    *,
    last_seq: int = 0,
    incarnation: uuid.UUID | None = None,
) -> None:
    """Write the identity; re-running with the same terminal id only updates location/pos/kind.

    A new identity starts after `last_seq` (where the server said this id continues) as
    database `incarnation` (a random one when None).
    """
    check_identity(identity)
    current = connection.execute(sa.select(terminal_table).where(terminal_table.c.id == 1)).first()
    values = {
        "terminal": identity.terminal,
        "location": identity.location,
        "pos": identity.pos,
        "kind": identity.kind,
    }
    if current is None:
        connection.execute(
            terminal_table.insert().values(
                id=1,
                last_seq=last_seq,
                incarnation=str(incarnation or uuid.uuid4()),
                created_at=dt.datetime.now(dt.UTC),
                **values,
            )
        )
    elif current.terminal != identity.terminal:
        raise ConfigError(
            f"this database belongs to terminal {current.terminal}, not {identity.terminal}; "
            "a terminal's id never changes (its seq numbers are tied to it)"
        )
    else:
        connection.execute(terminal_table.update().where(terminal_table.c.id == 1).values(values))


def load_identity(connection: sa.Connection) -> TerminalIdentity:
    """The terminal's identity, or NotInitialised with what to run."""
    try:
        row = connection.execute(
            sa.select(
                terminal_table.c.terminal,
                terminal_table.c.location,
                terminal_table.c.pos,
                terminal_table.c.kind,
            ).where(terminal_table.c.id == 1)
        ).first()
    except sa.exc.OperationalError as exc:
        if "no such table" not in str(exc.orig) and "does not exist" not in str(exc.orig):
            raise StoreError(f"terminal store: reading its identity failed: {exc.orig}") from exc
        raise NotInitialised(NO_TABLES) from exc
    if row is None:
        raise NotInitialised(NO_IDENTITY)
    return TerminalIdentity(row.terminal, row.location, row.pos, row.kind)


class Position(msgspec.Struct, frozen=True):
    """Where this terminal database is: its last seq and its incarnation."""

    last_seq: int
    incarnation: uuid.UUID | None


def load_position(connection: sa.Connection) -> Position:
    """The last seq and incarnation of an initialised terminal database."""
    row = connection.execute(
        sa.select(terminal_table.c.last_seq, terminal_table.c.incarnation).where(
            terminal_table.c.id == 1
        )
    ).first()
    if row is None:
        raise NotInitialised(NO_IDENTITY)
    incarnation = None if row.incarnation is None else uuid.UUID(row.incarnation)
    return Position(int(row.last_seq), incarnation)


def move_to(connection: sa.Connection, position: Position) -> None:
    """Set the last seq and incarnation (`terminal recover`; never lowers the last seq)."""
    last_seq = terminal_table.c.last_seq
    connection.execute(
        terminal_table.update()
        .where(terminal_table.c.id == 1)
        .values(
            last_seq=sa.case((last_seq < position.last_seq, position.last_seq), else_=last_seq),
            incarnation=None if position.incarnation is None else str(position.incarnation),
        )
    )
