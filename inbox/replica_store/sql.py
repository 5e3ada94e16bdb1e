"""The replica on SQLAlchemy (the terminal's SQLite): each call one short transaction.

The relay applies a tick's messages on its own connection with inbox/replica.py; this
adapter is the POS's way in. SQLAlchemy's errors stop here (`terminal_connection`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.store_faults import terminal_connection
from cajasync.core.terminal_tables import images, replica
from inbox import replica as rules
from schemas.feed import Change, ImageData
from schemas.records import Record

_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)
_live = sa.not_(replica.c.deleted)


IN_CHUNK = 500  # keys per IN (...) list, well under SQLite's limit


class SqlReplicaStore:
    """The replica of the terminal database on `engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def apply(self, changes: Sequence[Change], now: float) -> None:
        """Write every change newer than what is held (a delete as a tombstone)."""
        with self._transaction("applying changes to the replica") as connection:
            rules.upsert(connection, changes, now)

    def store_image(self, image: ImageData, now: float) -> bool:
        """Store an image once by its sha256; False when the bytes do not match it."""
        with self._transaction("storing an image") as connection:
            return rules.store_image(connection, image, now)

    def record(self, topic: str, key: str) -> Record | None:
        """The live record of `topic` with `key`, or None."""
        found = self.entry(topic, key)
        return None if found is None else found[1]

    def entry(self, topic: str, key: str) -> tuple[str | None, Record] | None:
        """The scope and live record of `topic` with `key`, or None."""
        query = sa.select(replica.c.scope, replica.c.body).where(
            replica.c.topic == topic, replica.c.key == key, _live
        )
        with self._reading(f"reading {topic} {key} from the replica") as connection:
            row = connection.execute(query).first()
        return None if row is None else (row.scope, _decoder.decode(row.body))

    def records(
        self, topic: str, limit: int | None = None, scope: str | None = None
    ) -> list[Record]:
        """Up to `limit` live records of `topic` (of `scope` when given), by key."""
        return [record for _scope, record in self.entries(topic, limit, scope)]

    def entries(
        self, topic: str, limit: int | None = None, scope: str | None = None, offset: int = 0
    ) -> list[tuple[str | None, Record]]:
        """`records` with the scope each came by, from the `offset`-th on (a page)."""
        query = (
            sa.select(replica.c.scope, replica.c.body)
            .where(replica.c.topic == topic, _live)
            .order_by(replica.c.key)
            .limit(limit)
            .offset(offset or None)
        )
        if scope is not None:
            query = query.where(replica.c.scope == scope)
        with self._reading(f"reading {topic} from the replica") as connection:
            return [(row.scope, _decoder.decode(row.body)) for row in connection.execute(query)]

    def counts(self, topic: str | None = None, scope: str | None = None) -> dict[str, int]:
        """Live records per topic holding any (only `topic`, only `scope` when given)."""
        query = sa.select(replica.c.topic, sa.func.count()).where(_live).group_by(replica.c.topic)
        if topic is not None:
            query = query.where(replica.c.topic == topic)
        if scope is not None:
            query = query.where(replica.c.scope == scope)
        with self._reading("counting replica records") as connection:
            return {row[0]: int(row[1]) for row in connection.execute(query)}

    def image(self, sha256: str) -> bytes | None:
        """The image stored under `sha256`, or None."""
        query = sa.select(images.c.data).where(images.c.sha256 == sha256)
        with self._reading("reading an image") as connection:
            data: bytes | None = connection.execute(query).scalar()
        return data

    def held_images(self, hashes: Sequence[str]) -> set[str]:
        """Which of `hashes` the replica holds the image of."""
        wanted = sorted(set(hashes))
        held: set[str] = set()
        with self._reading("looking up images") as connection:
            for start in range(0, len(wanted), IN_CHUNK):
                query = sa.select(images.c.sha256).where(
                    images.c.sha256.in_(wanted[start : start + IN_CHUNK])
                )
                held.update(connection.execute(query).scalars())
        return held

    def versions(self, topic: str, prefix: str = "") -> list[tuple[str, int]]:
        """(key, version) of live records of `topic` with keys starting with `prefix`."""
        query = sa.select(replica.c.key, replica.c.version).where(replica.c.topic == topic, _live)
        if prefix:
            query = query.where(replica.c.key.startswith(prefix, autoescape=True))
        with self._reading(f"reading the versions of {topic}") as connection:
            rows = connection.execute(query.order_by(replica.c.key)).all()
        return [(key, version) for key, version in rows]

    def tombstone(self, topic: str, keys: Sequence[str], now: float) -> int:
        """Delete live records of `topic` among `keys`, keeping their versions."""
        deleted = 0
        wanted = sorted(set(keys))
        with self._transaction(f"pruning {topic} from the replica") as connection:
            for start in range(0, len(wanted), IN_CHUNK):
                update = (
                    sa.update(replica)
                    .where(
                        replica.c.topic == topic,
                        replica.c.key.in_(wanted[start : start + IN_CHUNK]),
                        _live,
                    )
                    .values(deleted=True, body=None, image=None, applied_at=now)
                )
                deleted += connection.execute(update).rowcount
        return deleted

    def _transaction(self, doing: str) -> AbstractContextManager[sa.Connection]:
        return terminal_connection(self._engine, doing, write=True)

    def _reading(self, doing: str) -> AbstractContextManager[sa.Connection]:
        return terminal_connection(self._engine, doing, write=False)
