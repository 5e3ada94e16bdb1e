"""`cajasync terminal init`: the outbox in the terminal's database and its broker queue."""

from __future__ import annotations

import uuid

from sqlalchemy.engine import Engine

from cajasync.broker.rabbitmq import blocking_channel
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, check_identity, save_identity
from cajasync.core.settings import Settings
from cajasync.core.topology import declare_terminal


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
            save_identity(connection, identity, last_seq=last_seq, incarnation=incarnation)
        if declare:
            declare_terminal_queue(identity, settings)
    except BaseException:
        engine.dispose()
        raise
    return engine


def declare_terminal_queue(identity: TerminalIdentity, settings: Settings) -> str:
    """Declare the exchanges and the terminal's own queue with its bindings; its name."""
    doing = f"declaring the queue of terminal {identity.terminal}"
    with blocking_channel(settings.broker_url, doing=doing) as channel:
        return declare_terminal(
            channel, identity.terminal, identity.location, identity.pos, identity.kind
        )
