"""`cajasync terminal init`: the outbox in the terminal's database and its broker queue."""

from __future__ import annotations

import uuid

from sqlalchemy.engine import Connection, Engine

from cajasync.broker.rabbitmq import blocking_channel, username
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import (
    TerminalIdentity,
    check_identity,
    load_identity,
    save_identity,
)
from cajasync.core.settings import Settings
from cajasync.core.topology import (
    SHARED_USERS,
    declare_own_queue,
    rebind_terminal,
    terminal_streams,
)
from cajasync.errors import NotInitialised
from inbox.stream_offsets import stream_starts


def init_terminal(
    db_target: str,
    identity: TerminalIdentity,
    settings: Settings,
    *,
    declare: bool = True,
    last_seq: int = 0,
    incarnation: uuid.UUID | None = None,
) -> Engine:
    """Migrate the terminal database, save who it is and declare its queue; idempotent.

    With `declare=False` the broker is not touched (an offline install); the relay
    declares the same topology when it first connects. A new identity starts after
    `last_seq` as database `incarnation` (cajasync/processes/recover.py asks the server for both).
    """
    check_identity(identity)  # before creating a database file for a bad id
    engine = make_engine(db_target)
    try:
        upgrade(engine, "terminal")
        with engine.begin() as connection:
            was = previous_identity(connection)
            save_identity(connection, identity, last_seq=last_seq, incarnation=incarnation)
            # the streams of its shared scopes are read from now on, as its queue is
            stream_starts(connection, terminal_streams(identity.location))
        if declare:
            declare_terminal_queue(identity, settings, was=was)
    except BaseException:
        engine.dispose()
        raise
    return engine


def declare_terminal_queue(
    identity: TerminalIdentity, settings: Settings, *, was: TerminalIdentity | None = None
) -> str:
    """Declare the exchanges and the terminal's own queue with its bindings; its name.

    Under the shared broker user the till binds its queue itself, and a till set up again
    with another location, pos or kind than it `was` unbinds what it received there. Under
    its own user it declares its queue alone: the server bound it by the registry
    (`cajasync server terminal add/move`), whatever the till says it is.
    """
    doing = f"declaring the queue of terminal {identity.terminal}"
    with blocking_channel(settings.broker_url, doing=doing) as channel:
        if username(settings.broker_url) not in SHARED_USERS:
            return declare_own_queue(channel, identity.terminal)
        where = None if was is None else (was.location, was.pos, was.kind)
        return rebind_terminal(
            channel, identity.terminal, where, identity.location, identity.pos, identity.kind
        )


def previous_identity(connection: Connection) -> TerminalIdentity | None:
    """The identity a database had before this init (None for a new database)."""
    try:
        return load_identity(connection)
    except NotInitialised:
        return None
