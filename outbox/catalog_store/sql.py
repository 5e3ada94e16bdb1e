"""The server catalog on SQLAlchemy (SQLite or PostgreSQL): each call one transaction.

The back office may call outbox/catalog.py in a transaction of its own; this adapter opens
one per call. SQLAlchemy's errors stop here and in outbox/catalog.py (`server_transaction`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.server_tables import change_log, stream_heads
from cajasync.core.store_faults import server_transaction
from outbox import catalog
from schemas.feed import Change
from schemas.records import Record

_change_decoder: msgspec.msgpack.Decoder[Change] = msgspec.msgpack.Decoder(Change)


class SqlCatalogStore:
    """The catalog of the server database on `engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def upsert_many(self, records: Iterable[Record], *, scope: str = "all") -> list[Change]:
        """Create or replace records in `scope`; one change per record, in input order."""
        with self._transaction("upserting catalog records") as connection:
            return catalog.upsert_many(connection, records, scope=scope)

    def delete(self, topic: str, key: str, *, scope: str = "all") -> Change | None:
        """Turn a record into a tombstone; None if there is none."""
        with self._transaction(f"deleting {topic} {key}") as connection:
            return catalog.delete(connection, topic, key, scope=scope)

    def put_images(self, images: Sequence[bytes]) -> list[str]:
        """Store images once each, by content; their sha256s in input order."""
        with self._transaction("storing images") as connection:
            return catalog.put_images(connection, images)

    def get(self, topic: str, key: str, scope: str = "all") -> Record | None:
        """The current record of `key` in `scope`, or None when missing or deleted."""
        with self._transaction(f"reading {topic} {key}") as connection:
            return catalog.get(connection, topic, key, scope)

    def get_image(self, sha256: str) -> bytes | None:
        """The bytes of a stored image, or None."""
        with self._transaction("reading an image") as connection:
            return catalog.get_image(connection, sha256)

    def heads(self, streams: Sequence[str]) -> dict[str, int]:
        """Head seq of each of `streams` that exists."""
        query = sa.select(stream_heads.c.stream, stream_heads.c.seq).where(
            stream_heads.c.stream.in_(list(streams))
        )
        with self._transaction("reading stream heads") as connection:
            return {row.stream: int(row.seq) for row in connection.execute(query)}

    def changes(self, stream: str, *, after_seq: int = 0) -> list[Change]:
        """The change log of `stream` after `after_seq`, in seq order."""
        query = (
            sa.select(change_log.c.body)
            .where(change_log.c.stream == stream, change_log.c.seq > after_seq)
            .order_by(change_log.c.seq)
        )
        with self._transaction(f"reading the change log of {stream}") as connection:
            return [_change_decoder.decode(body) for body in connection.execute(query).scalars()]

    def _transaction(self, doing: str) -> AbstractContextManager[sa.Connection]:
        return server_transaction(self._engine, "server catalog", doing)
