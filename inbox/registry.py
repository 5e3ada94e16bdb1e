"""The terminal registry: which terminals this server knows, where each one is, whether it may
still send; and who is let in.

A registered terminal's location, point of sale and kind come from here, never from what
its requests say (`as_registered`), and its queue is bound by them
(cajasync/processes/fleet.py). Who may send (`refusal`):

* a registered, active terminal, by its own broker user; by the shared user (`guest`) only
  when the server allows it (`Settings.allow_shared_user`);
* a revoked terminal: nothing new. Its broker user is deleted when it is revoked, so what
  still arrives under that user was published before (in flight): operations stay; requests
  are refused. Under the shared user nothing of it is accepted any more;
* an unregistered terminal: trusted as before the registry (self-declared location, pos and
  kind) when the server allows the shared user, refused otherwise.

`allow_shared_user` is True by default in the library (tests, the demo, a shop without
per-till users) and False for `cajasync server run` unless `--allow-shared-user`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.broker.ports import Delivery
from cajasync.core.server_tables import ACTIVE, REVOKED, store_identity, terminals
from cajasync.core.store_faults import server_transaction
from cajasync.core.topology import SHARED_USERS
from cajasync.errors import ConfigError, InvalidMessage, StoreError
from inbox.classify import authenticated_sender
from inbox.server_store.base import Accepted, Incoming, Invalid, Rejection, Unreadable
from schemas.feed import CatchUpRequest, SnapshotRequest
from schemas.ops import topic_of
from schemas.questions import (
    CountsQuestion,
    DigestQuestion,
    EntriesQuestion,
    HeldQuestion,
    RecordQuestion,
)

WHAT = "server store"


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered terminal."""

    terminal: str
    location: str
    pos: str
    kind: str
    status: str
    broker_user: str | None
    added_at: dt.datetime
    updated_at: dt.datetime
    revoked_at: dt.datetime | None = None
    rotated_at: dt.datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.status == REVOKED

    def as_dict(self) -> dict[str, object]:
        """For `--json`: times as ISO 8601."""
        return {
            "terminal": self.terminal,
            "location": self.location,
            "pos": self.pos,
            "kind": self.kind,
            "status": self.status,
            "broker_user": self.broker_user,
            "added_at": _iso(self.added_at),
            "updated_at": _iso(self.updated_at),
            "revoked_at": _iso(self.revoked_at),
            "rotated_at": _iso(self.rotated_at),
        }


# -- who is let in (pure) ---------------------------------------------------------------------


def refusal(
    terminal: str,
    user_id: str | None,
    registration: Registration | None,
    *,
    allow_shared: bool,
    in_flight_ok: bool,
) -> str | None:
    """Why a message of `terminal` published by `user_id` is refused, or None when it is let
    in. `in_flight_ok`: what a revoked terminal's own user published before its revocation
    is still accepted (operations), else refused (requests)."""
    shared = user_id is None or user_id in SHARED_USERS
    if registration is None:
        if allow_shared:
            return None
        return (
            f"terminal {terminal} is not registered on this server (register it with "
            f"`cajasync server terminal add {terminal} ...`)"
        )
    if registration.revoked:
        if in_flight_ok and not shared:
            return None  # its broker user is gone: this was published before the revocation
        return f"terminal {terminal} was revoked on {_iso(registration.revoked_at)}"
    if shared and not allow_shared:
        return (
            f"terminal {terminal} sent as the shared broker user {user_id!r}: it must use its "
            "own (`cajasync server terminal add`), or the server runs with --allow-shared-user"
        )
    return None


Scoped = TypeVar(
    "Scoped",
    bound=SnapshotRequest
    | CatchUpRequest
    | CountsQuestion
    | HeldQuestion
    | DigestQuestion
    | EntriesQuestion
    | RecordQuestion,
)


def as_registered(request: Scoped, registration: Registration | None) -> Scoped:
    """The request with the location, point of sale and kind of the registry (unchanged for
    an unregistered terminal, whose own words are all there is)."""
    if registration is None:
        return request
    return msgspec.structs.replace(
        request,
        location=registration.location,
        pos=registration.pos,
        terminal_kind=registration.kind,
    )


class Lookup:
    """The registry as the request handler and ingest read it, plus the admission policy."""

    def __init__(self, engine: Engine, *, allow_shared: bool) -> None:
        self._engine = engine
        self.allow_shared = allow_shared

    def registered(self, terminal: str) -> Registration | None:
        return registered(self._engine, terminal)

    def registrations(self, names: Iterable[str]) -> dict[str, Registration]:
        return registrations(self._engine, names)

    def check_request(self, terminal: str, user_id: str | None) -> Registration | None:
        """The terminal's registration; InvalidMessage with the reason when refused."""
        doing = f"answering terminal {terminal}: reading the terminal registry"
        registration = registrations(self._engine, [terminal], doing=doing).get(terminal)
        reason = refusal(
            terminal, user_id, registration, allow_shared=self.allow_shared, in_flight_ok=False
        )
        if reason is not None:
            raise InvalidMessage(reason)
        return registration


def admit(lookup: Lookup, deliveries: Sequence[Delivery], batch: list[Incoming]) -> list[Incoming]:
    """Server ingest's check of a classified batch: an operation whose terminal is not let in
    (`refusal`) becomes a Rejection with the reason (dead-lettered, answered to a sender the
    broker authenticated)."""
    names = {name for incoming in batch if (name := _terminal_of(incoming)) is not None}
    known = lookup.registrations(names)
    admitted: list[Incoming] = []
    for delivery, incoming in zip(deliveries, batch, strict=True):
        terminal = _terminal_of(incoming)
        reason = None
        if terminal is not None:
            reason = refusal(
                terminal,
                delivery.user_id,
                known.get(terminal),
                allow_shared=lookup.allow_shared,
                in_flight_ok=True,
            )
        admitted.append(incoming if reason is None else _refused(delivery, incoming, reason))
    return admitted


def _terminal_of(incoming: Incoming) -> str | None:
    match incoming:
        case Accepted() | Invalid():
            return incoming.envelope.terminal
        case Unreadable():
            return incoming.terminal
        case _:
            return None


def _refused(delivery: Delivery, incoming: Incoming, reason: str) -> Rejection:
    if isinstance(incoming, Accepted | Invalid):
        envelope = incoming.envelope
        op_id, version, topic = str(envelope.op_id), envelope.version, topic_of(envelope.op)
    else:
        assert isinstance(incoming, Unreadable)
        op_id, version, topic = incoming.op_id, incoming.version, incoming.topic
    return Rejection(
        terminal=authenticated_sender(delivery),
        seq=None,
        op_id=op_id,
        version=version,
        topic=topic,
        reason=reason,
    )


# -- the store side ---------------------------------------------------------------------------


def registered(engine: Engine, terminal: str) -> Registration | None:
    """The registration of `terminal`, or None when the server does not know it."""
    return registrations(engine, [terminal]).get(terminal)


def registrations(
    engine: Engine,
    names: Iterable[str] | None = None,
    *,
    doing: str = "reading the terminal registry",
) -> dict[str, Registration]:
    """Registrations by terminal: of `names`, or every one when None."""
    query = sa.select(terminals).order_by(terminals.c.terminal)
    if names is not None:
        wanted = sorted(set(names))
        if not wanted:
            return {}
        query = query.where(terminals.c.terminal.in_(wanted))
    with server_transaction(engine, WHAT, doing) as connection:
        rows = connection.execute(query).all()
    return {row.terminal: _registration(row) for row in rows}


def check_new(engine: Engine, terminal: str) -> None:
    """ConfigError when `terminal` is registered already."""
    known = registered(engine, terminal)
    if known is not None:
        raise _already(known)


def _already(known: Registration) -> ConfigError:
    return ConfigError(
        f"terminal {known.terminal} is already registered ({known.status}): "
        "`cajasync server terminal move` changes where it is, `rotate` its password"
    )


def insert(
    engine: Engine, terminal: str, location: str, pos: str, kind: str, broker_user: str | None
) -> Registration:
    """Register a new terminal; ConfigError when it is registered already."""
    now = dt.datetime.now(dt.UTC)
    with server_transaction(engine, WHAT, f"registering terminal {terminal}") as connection:
        known = connection.execute(
            sa.select(terminals).where(terminals.c.terminal == terminal)
        ).first()
        if known is not None:
            raise _already(_registration(known))
        connection.execute(
            terminals.insert().values(
                terminal=terminal,
                location=location,
                pos=pos,
                kind=kind,
                status=ACTIVE,
                broker_user=broker_user,
                added_at=now,
                updated_at=now,
            )
        )
    return require(engine, terminal)


def update(engine: Engine, terminal: str, **values: object) -> Registration:
    """Change a registered terminal's columns (location, pos, kind, status...)."""
    require(engine, terminal)
    with server_transaction(engine, WHAT, f"updating terminal {terminal}") as connection:
        connection.execute(
            terminals.update()
            .where(terminals.c.terminal == terminal)
            .values(updated_at=dt.datetime.now(dt.UTC), **values)
        )
    return require(engine, terminal)


def require(engine: Engine, terminal: str) -> Registration:
    """The registration of `terminal`; ConfigError naming it when it is not registered."""
    registration = registered(engine, terminal)
    if registration is None:
        raise ConfigError(
            f"terminal {terminal} is not registered (`cajasync server terminal list` shows "
            "those that are)"
        )
    return registration


def store_id(engine: Engine) -> str:
    """This store's id (made by migration s0010, i.e. at `cajasync server init`)."""
    with server_transaction(engine, WHAT, "reading the store id") as connection:
        found = connection.execute(
            sa.select(store_identity.c.store_id).where(store_identity.c.id == 1)
        ).scalar()
    if found is None:
        raise StoreError(f"{WHAT} has no store id: run `cajasync server init` on it")
    return str(uuid.UUID(found))


def _registration(row: sa.Row[tuple[object, ...]]) -> Registration:
    m = row._mapping
    return Registration(
        terminal=m["terminal"],
        location=m["location"],
        pos=m["pos"],
        kind=m["kind"],
        status=m["status"],
        broker_user=m["broker_user"],
        added_at=_aware(m["added_at"]),
        updated_at=_aware(m["updated_at"]),
        revoked_at=_aware(m["revoked_at"]) if m["revoked_at"] else None,
        rotated_at=_aware(m["rotated_at"]) if m["rotated_at"] else None,
    )


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite gives naive datetimes back: they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")
