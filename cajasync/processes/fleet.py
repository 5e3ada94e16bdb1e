"""`cajasync server terminal …`: register terminals, give each its own broker user, bind its
queue by the registry, move, revoke and rotate them.

The registry (inbox/registry.py) says where a terminal is; the broker follows it: its queue
is bound to exactly the change scopes of its registered location, point of sale and kind
(what else the queue is bound to is unbound, whoever bound it), and its broker user
(cajasync/broker/management.py) may publish only its own routing keys and read only its queue.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from cajasync.broker.management import Management, terminal_permissions, terminal_url
from cajasync.broker.rabbitmq import blocking_channel
from cajasync.core.credentials import write_private
from cajasync.core.identity import TerminalIdentity, check_identity
from cajasync.core.server_tables import REVOKED
from cajasync.core.settings import Settings
from cajasync.core.topology import (
    DOWN_EXCHANGE,
    declare_server,
    declare_terminal,
    stale_bindings,
    terminal_queue,
)
from cajasync.errors import ConfigError
from inbox import registry
from inbox.registry import Registration


@dataclass(frozen=True, slots=True)
class Credentials:
    """A terminal's registration and the broker URL its till uses (None: shared user)."""

    registration: Registration
    broker_url: str | None


def add_terminal(
    engine: Engine,
    settings: Settings,
    identity: TerminalIdentity,
    *,
    broker_user: bool = True,
) -> Credentials:
    """Register a terminal, create its broker user (unless not `broker_user`) and bind its
    queue; the broker URL its till needs."""
    check_identity(identity)
    terminal = identity.terminal
    registry.check_new(engine, terminal)  # before touching the broker
    url = None
    management = Management(settings)
    if broker_user:
        _check_user_free(management, terminal)
        url = _new_password(management, settings, terminal, identity.location)
    try:
        bind_queue(settings, identity)
        added = registry.insert(
            engine,
            terminal,
            identity.location,
            identity.pos,
            identity.kind,
            terminal if broker_user else None,
        )
    except BaseException:
        if broker_user:
            management.delete_user(terminal)
        raise
    return Credentials(added, url)


def move_terminal(
    engine: Engine,
    settings: Settings,
    terminal: str,
    *,
    location: str | None = None,
    pos: str | None = None,
    kind: str | None = None,
) -> Registration:
    """Change where a terminal is (and what kind it is); rebind its queue: the scopes it
    left are unbound, the new ones bound."""
    current = registry.require(engine, terminal)
    moved = TerminalIdentity(
        terminal, location or current.location, pos or current.pos, kind or current.kind
    )
    check_identity(moved)
    bind_queue(settings, moved)
    if current.broker_user and moved.location != current.location:
        # the streams it may read follow it: the new location's, no longer the old one's
        Management(settings).grant(
            current.broker_user, terminal_permissions(terminal, moved.location)
        )
    return registry.update(
        engine, terminal, location=moved.location, pos=moved.pos, kind=moved.kind
    )


def revoke_terminal(engine: Engine, settings: Settings, terminal: str) -> Registration:
    """Refuse a terminal from now on: its broker user is deleted and its connections closed.
    What it already sent stays; whatever is still in flight under its user is applied."""
    current = registry.require(engine, terminal)
    if current.revoked:
        return current
    revoked = registry.update(engine, terminal, status=REVOKED, revoked_at=_now())
    if current.broker_user:
        management = Management(settings)
        management.delete_user(current.broker_user)
        management.close_connections(current.broker_user, f"terminal {terminal} revoked")
    return revoked


def rotate_terminal(engine: Engine, settings: Settings, terminal: str) -> Credentials:
    """A new password for an active terminal's broker user; connections made with the old
    one are closed. The broker URL its till needs from now on."""
    current = registry.require(engine, terminal)
    if current.revoked:
        raise ConfigError(f"terminal {terminal} is revoked: it gets no new password")
    management = Management(settings)
    url = _new_password(management, settings, terminal, current.location)
    management.close_connections(terminal, f"terminal {terminal}: password rotated")
    rotated = registry.update(engine, terminal, broker_user=terminal, rotated_at=_now())
    return Credentials(rotated, url)


def bind_queue(settings: Settings, identity: TerminalIdentity) -> str:
    """Declare the terminal's queue bound by its scopes and unbind every other change key it
    has (an earlier location, pos or kind, or what a till declared for itself)."""
    management = Management(settings)
    queue = terminal_queue(identity.terminal)
    doing = f"binding the queue of terminal {identity.terminal}"
    with blocking_channel(settings.broker_url, doing=doing) as channel:
        declare_server(channel)
        declare_terminal(channel, identity.terminal, identity.location, identity.pos, identity.kind)
        bound = management.bound_keys(queue, DOWN_EXCHANGE)
        where = (identity.location, identity.pos, identity.kind)
        for key in stale_bindings(identity.terminal, bound, *where):
            channel.queue_unbind(queue, DOWN_EXCHANGE, routing_key=key)
    return queue


def write_credentials(path: Path, broker_url: str) -> None:
    """Write a till's broker URL to `path`, readable by its owner only (mode 0600)."""
    write_private(path, broker_url)


def _check_user_free(management: Management, terminal: str) -> None:
    """Broker users are per broker, not per vhost: refuse one another vhost uses."""
    elsewhere = [v for v in management.user_vhosts(terminal) if v != management.vhost]
    if elsewhere:
        raise ConfigError(
            f"broker user {terminal} already has permissions on vhost(s) "
            f"{', '.join(elsewhere)}: a terminal id must be unique across the broker"
        )


def _new_password(management: Management, settings: Settings, terminal: str, location: str) -> str:
    password = secrets.token_urlsafe(24)
    management.put_user(terminal, password)
    management.grant(terminal, terminal_permissions(terminal, location))
    return terminal_url(settings.broker_url, terminal, password)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
