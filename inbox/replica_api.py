"""What the POS reads: server master data from the terminal's replica, as record Structs.

    replica = Replica(engine)
    product = replica.get(Product, "7790001000011")      # Product | None
    sellers = replica.query(Seller)                      # list[Seller], by key
    counts = replica.count()                             # {"productos": 100000, ...}
    png = replica.image(product.image) if product and product.image else None
    levels = replica.query(StockLevel)                   # this till's location
    there = replica.query(StockLevel, location="L2")     # pulled with `pull stock --location L2`

Stock (every topic of scope `loc`) is read for the till's own location unless another is
named (`location=`; ALL_LOCATIONS for every one held); `located` says which location each
record belongs to. Deleted records (tombstones) are invisible here. The POS never sees
messages, streams or versions it did not ask for: the relay keeps the replica current
underneath. Every read
raises a cajasync error (NotInitialised before `cajasync terminal init`), never a database's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TypeVar, overload

from sqlalchemy.engine import Engine

from cajasync.core.identity import load_identity
from cajasync.core.periods import TIMEZONE_SETTING, zone
from cajasync.core.store_faults import terminal_connection
from cajasync.errors import NotInitialised
from inbox.replica_store import ReplicaStore, SqlReplicaStore
from schemas.records import KINDS_BY_TOPIC, Record, Setting
from schemas.topics import DOWN_TOPIC_SCOPES

R = TypeVar("R", bound=Record)
ALL_LOCATIONS = "*"  # `location=` for every location's records of a `loc` topic


class Replica:
    """Typed reads of the replica of the terminal database on `engine` (each call is one
    short read), or of any replica store (inbox/replica_store: in memory for tests).

    `location` is the till's own location (read from the terminal's identity when not
    given; a store without one and no `location` reads every location's stock).
    """

    def __init__(self, engine: Engine | ReplicaStore, *, location: str | None = None) -> None:
        self.store: ReplicaStore = SqlReplicaStore(engine) if isinstance(engine, Engine) else engine
        self._engine = engine if isinstance(engine, Engine) else None
        self._location = location

    def own_location(self) -> str | None:
        """The till's location: given, or its identity's (None for a bare store)."""
        if self._location is None and self._engine is not None:
            doing = "reading the terminal identity"
            with terminal_connection(self._engine, doing, write=False) as connection:
                try:
                    self._location = load_identity(connection).location
                except NotInitialised:
                    return None  # no identity: every location (the read says the rest)
        return self._location

    def get(self, kind: type[R], key: str, *, location: str | None = None) -> R | None:
        """The record of `kind` with `key`, or None (unknown, deleted, another kind, or
        stock of another location than `location`, by default the till's own)."""
        record = self.get_record(kind.topic, key, location=location)
        return record if isinstance(record, kind) else None

    def get_record(self, topic: str, key: str, *, location: str | None = None) -> Record | None:
        """The live record of `topic` with `key`, whatever its kind, or None."""
        found = self.locate(topic, key, location=location)
        return None if found is None else found[1]

    def locate(
        self, topic: str, key: str, *, location: str | None = None
    ) -> tuple[str | None, Record] | None:
        """(location, record) of `topic` with `key` (location None for a topic not per
        location), or None; stock of another location than asked reads as None."""
        found = self.store.entry(topic, key)
        if found is None:
            return None
        scope = self._scope(topic, location)
        if scope is not None and found[0] != scope:
            return None
        return _location_of(found[0]), found[1]

    @overload
    def query(
        self, what: type[R], *, limit: int | None = None, location: str | None = None
    ) -> list[R]: ...

    @overload
    def query(
        self, what: str, *, limit: int | None = None, location: str | None = None
    ) -> list[Record]: ...

    def query(
        self, what: type[R] | str, *, limit: int | None = None, location: str | None = None
    ) -> list[R] | list[Record]:
        """Live records of a kind (`Product`) or a topic (`"productos"`), by key (stock of
        `location`, by default the till's own)."""
        if isinstance(what, str):
            return self.store.records(what, limit, self._scope(what, location))
        mixed = len(KINDS_BY_TOPIC.get(what.topic, ())) > 1  # configuracion holds several
        scope = self._scope(what.topic, location)
        found = _of_kind(what, self.store.records(what.topic, None if mixed else limit, scope))
        return found if limit is None else found[:limit]

    def located(
        self,
        topic: str,
        *,
        limit: int | None = None,
        location: str | None = None,
        offset: int = 0,
    ) -> list[tuple[str | None, Record]]:
        """`query` of a topic with the location each record belongs to (None for a topic
        not per location), from the `offset`-th record on (a page of a long list)."""
        entries = self.store.entries(topic, limit, self._scope(topic, location), offset)
        return [(_location_of(scope), record) for scope, record in entries]

    def count(self, topic: str | None = None, *, location: str | None = None) -> dict[str, int]:
        """Live records per topic: every down topic (0 when empty), or only `topic` (stock
        of `location`, by default the till's own)."""
        held = self.store.counts(topic)
        names = [topic] if topic is not None else [*DOWN_TOPIC_SCOPES, *sorted(held)]
        for name in names:
            scope = self._scope(name, location)
            if scope is not None and held.get(name):
                held[name] = self.store.counts(name, scope).get(name, 0)
        return {name: held.get(name, 0) for name in dict.fromkeys(names)}

    def image(self, sha256: str) -> bytes | None:
        """The image stored under `sha256`, or None when the terminal does not hold it."""
        return self.store.image(sha256)

    def held_images(self, hashes: Sequence[str]) -> set[str]:
        """Which of `hashes` the terminal holds the image of (a page's "image" column)."""
        return self.store.held_images(hashes) if hashes else set()

    def _scope(self, topic: str, location: str | None) -> str | None:
        """The scope to read `topic` in: a location's for a `loc` topic, else None (any)."""
        if DOWN_TOPIC_SCOPES.get(topic) != "loc" or location == ALL_LOCATIONS:
            return None
        where = location if location is not None else self.own_location()
        return None if where is None else f"loc.{where}"


def _location_of(scope: str | None) -> str | None:
    """`L2` for scope `loc.L2`; None for any other scope."""
    if scope is not None and scope.startswith("loc."):
        return scope.removeprefix("loc.")
    return None


def _of_kind(kind: type[R], records: list[R] | list[Record]) -> list[R]:
    """The records that are of `kind`."""
    return [record for record in records if isinstance(record, kind)]


def terminal_zone(engine: Engine | ReplicaStore, configured: str | None = None) -> dt.tzinfo:
    """The time zone a till reads dates in: `configured` (CAJASYNC_TIMEZONE) when given,
    else the `timezone` setting of its downloaded configuration, else the machine's."""
    if configured:
        return zone(configured)
    setting = Replica(engine).get(Setting, TIMEZONE_SETTING)
    return zone(setting.value if setting is not None else None)
