"""What the POS reads: server master data from the terminal's replica, as record Structs.

    replica = Replica(engine)
    product = replica.get(Product, "7790001000011")      # Product | None
    sellers = replica.query(Seller)                      # list[Seller], by key
    counts = replica.count()                             # {"productos": 100000, ...}
    png = replica.image(product.image) if product and product.image else None

Deleted records (tombstones) are invisible here. The POS never sees messages, streams or
versions it did not ask for: the relay keeps the replica current underneath. Every read
raises a cajasync error (NotInitialised before `cajasync terminal init`), never a database's.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeVar, overload

from sqlalchemy.engine import Engine

from cajasync.core.periods import TIMEZONE_SETTING, zone
from inbox.replica_store import ReplicaStore, SqlReplicaStore
from schemas.records import KINDS_BY_TOPIC, Record, Setting
from schemas.topics import DOWN_TOPIC_SCOPES

R = TypeVar("R", bound=Record)


class Replica:
    """Typed reads of the replica of the terminal database on `engine` (each call is one
    short read), or of any replica store (inbox/replica_store: in memory for tests)."""

    def __init__(self, engine: Engine | ReplicaStore) -> None:
        self.store: ReplicaStore = SqlReplicaStore(engine) if isinstance(engine, Engine) else engine

    def get(self, kind: type[R], key: str) -> R | None:
        """The record of `kind` with `key`, or None (unknown, deleted or another kind)."""
        record = self.get_record(kind.topic, key)
        return record if isinstance(record, kind) else None

    def get_record(self, topic: str, key: str) -> Record | None:
        """The live record of `topic` with `key`, whatever its kind, or None."""
        return self.store.record(topic, key)

    @overload
    def query(self, what: type[R], *, limit: int | None = None) -> list[R]: ...

    @overload
    def query(self, what: str, *, limit: int | None = None) -> list[Record]: ...

    def query(self, what: type[R] | str, *, limit: int | None = None) -> list[R] | list[Record]:
        """Live records of a kind (`Product`) or a topic (`"productos"`), by key."""
        if isinstance(what, str):
            return self.store.records(what, limit)
        mixed = len(KINDS_BY_TOPIC.get(what.topic, ())) > 1  # configuracion holds several
        found = _of_kind(what, self.store.records(what.topic, None if mixed else limit))
        return found if limit is None else found[:limit]

    def count(self, topic: str | None = None) -> dict[str, int]:
        """Live records per topic: every down topic (0 when empty), or only `topic`."""
        held = self.store.counts(topic)
        names = [topic] if topic is not None else [*DOWN_TOPIC_SCOPES, *sorted(held)]
        return {name: held.get(name, 0) for name in dict.fromkeys(names)}

    def image(self, sha256: str) -> bytes | None:
        """The image stored under `sha256`, or None when the terminal does not hold it."""
        return self.store.image(sha256)


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
