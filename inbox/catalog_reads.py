"""Reads of the server catalog for the request handler, in one read-only snapshot.

`read_snapshot(engine)` opens one transaction per request: REPEATABLE READ and read-only
on PostgreSQL; on SQLite a deferred BEGIN, whose first read fixes the snapshot (WAL) and
takes no write lock, so the back office and ingest keep writing while a snapshot streams.
Every query is a keyset page of a bounded size. SQLAlchemy errors become StoreError
(StoreUnavailable for an outage, StoreDataError for a value the database refuses).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.db import is_sqlite, make_engine
from cajasync.core.server_tables import catalog_images, catalog_records, change_log, stream_heads
from cajasync.core.store_faults import store_error
from schemas.feed import split_stream

IN_CHUNK = 500  # parameters per IN (...) list, well under SQLite's limit


class RecordRow(NamedTuple):
    """One catalog record as stored: `body` is the msgpack record, None for a tombstone."""

    key: str
    version: int
    seq: int
    body: bytes | None
    image: str | None


class SqlCatalogReader:
    """Keyset-paged reads of catalog records, stream heads, the change log and images."""

    def __init__(self, connection: sa.Connection) -> None:
        self._connection = connection

    @property
    def connection(self) -> sa.Connection:
        """The snapshot's connection, for reads beyond the catalog (inbox/questions.py)."""
        return self._connection

    def heads(self, streams: Sequence[str]) -> dict[str, int]:
        """Head seq of each of `streams` that exists."""
        found: dict[str, int] = {}
        for chunk in _chunks(streams):
            query = sa.select(stream_heads.c.stream, stream_heads.c.seq).where(
                stream_heads.c.stream.in_(chunk)
            )
            found.update({row.stream: row.seq for row in self._connection.execute(query)})
        return found

    def compacted_to(self, stream: str) -> int:
        """The seq `stream`'s change log was compacted to: changes at or below it are gone."""
        query = sa.select(stream_heads.c.compacted_to).where(stream_heads.c.stream == stream)
        return int(self._connection.execute(query).scalar() or 0)

    def current(self, stream: str, *, after_key: str | None, limit: int) -> list[RecordRow]:
        """Live (not deleted) records of `stream` with keys after `after_key`, by key."""
        query = _records(stream).where(catalog_records.c.deleted.is_(False))
        if after_key is not None:
            query = query.where(catalog_records.c.key > after_key)
        return self._rows(query.order_by(catalog_records.c.key).limit(limit))

    def changed(self, stream: str, *, after_seq: int, limit: int) -> list[RecordRow]:
        """Records of `stream` changed after `after_seq`, tombstones included, by seq."""
        query = _records(stream).where(catalog_records.c.seq > after_seq)
        return self._rows(query.order_by(catalog_records.c.seq).limit(limit))

    def by_keys(self, stream: str, keys: Iterable[str]) -> list[RecordRow]:
        """Live records of `stream` among `keys`, by key."""
        rows: list[RecordRow] = []
        for chunk in _chunks(sorted(set(keys))):
            query = _records(stream).where(
                catalog_records.c.deleted.is_(False), catalog_records.c.key.in_(chunk)
            )
            rows.extend(self._rows(query))
        return sorted(rows, key=lambda row: row.key)

    def changes(
        self, stream: str, *, from_seq: int, to_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """(seq, encoded `Change`) of `stream` for `from_seq <= seq <= to_seq`, by seq."""
        query = (
            sa.select(change_log.c.seq, change_log.c.body)
            .where(
                change_log.c.stream == stream,
                change_log.c.seq >= from_seq,
                change_log.c.seq <= to_seq,
            )
            .order_by(change_log.c.seq)
            .limit(limit)
        )
        return [(row.seq, row.body) for row in self._connection.execute(query)]

    def images(self, hashes: Sequence[str]) -> dict[str, bytes]:
        """The stored images among `hashes` (at most a few hundred at a time: they are big)."""
        query = sa.select(catalog_images.c.sha256, catalog_images.c.data).where(
            catalog_images.c.sha256.in_(list(hashes))
        )
        return {row.sha256: row.data for row in self._connection.execute(query)}

    def _rows(
        self, query: sa.Select[tuple[str, int, int, bytes | None, str | None]]
    ) -> list[RecordRow]:
        return list(map(RecordRow._make, self._connection.execute(query).all()))


def _records(stream: str) -> sa.Select[tuple[str, int, int, bytes | None, str | None]]:
    topic, scope = split_stream(stream)
    c = catalog_records.c
    return sa.select(c.key, c.version, c.seq, c.body, c.image).where(
        c.topic == topic, c.scope == scope
    )


def _chunks(items: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield list(items[start : start + IN_CHUNK])


def reading_engine(engine: Engine) -> Engine:
    """An engine for snapshots: on a SQLite file, a second one whose BEGIN is DEFERRED.

    cajasync's SQLite engines begin IMMEDIATE (the write lock up front, for writers); a
    snapshot held with it would stop the back office and ingest for its whole length.
    The caller disposes the returned engine when it is not `engine`.
    """
    database = engine.url.database
    if not is_sqlite(engine) or database in (None, "", ":memory:"):
        return engine
    return make_engine(engine.url.render_as_string(hide_password=False), immediate=False)


@contextmanager
def read_snapshot(engine: Engine, *, doing: str) -> Iterator[SqlCatalogReader]:
    """A reader over one consistent, read-only snapshot of the catalog."""
    try:
        with engine.connect() as connection:
            if not is_sqlite(engine):
                connection = connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            with connection.begin():
                yield SqlCatalogReader(connection)
    except sa.exc.SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise store_error(exc, f"server store {where}", doing) from exc
