"""The server catalog: master data, its versions and its change log, in the caller's transaction.

    with engine.begin() as connection:
        catalog.upsert(connection, product)  # productos:all
        catalog.upsert_many(connection, levels, scope="loc.L1")  # stock of one location
        catalog.delete(connection, "productos", "000123")
        sha256 = catalog.put_image(connection, png)

Every change raises the record's version (1 + the highest version the key ever had in its
topic; a version on the input is ignored), takes the next seq of its stream (topic:scope)
under a lock on the stream's head row, updates `catalog_records` and appends the change to
`catalog_changes`, which the feed relay (outbox/feed_relay.py) publishes.

Scopes are `all`, `loc.<location>`, `pos.<point of sale>` and `term.<terminal>`. A topic takes
its natural scope (schemas.topics.DOWN_TOPIC_SCOPES) or one terminal's. A key lives in one
scope of its topic at a time (a terminal's replica holds one record per topic and key):
stock and per-point-of-sale records need keys that name their location or point of sale,
as the seed's `L1/000123` and `PV1/efectivo` do.

An upsert whose record equals the current one (same fields, same scope) is skipped: no
new version, nothing logged, and the current change is returned, so re-running an import
publishes only what really changed.

Every record is checked against its schema and the record rules (schemas/record_rules.py:
finite, non-negative prices with two places, tax rates 0..100, names not blank, ...)
before anything is written: one bad record refuses the whole call with a CatalogError
holding one line per bad record, and nothing of the call reaches the catalog.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from cajasync.core.dialect import Dialect
from cajasync.core.server_tables import catalog_images, catalog_records, change_log, stream_heads
from cajasync.core.store_faults import translated
from cajasync.errors import CatalogError
from schemas.codec import encode
from schemas.feed import Change, split_stream, stream_name
from schemas.floats import python_float_problem
from schemas.record_rules import record_problem
from schemas.records import KINDS_BY_TOPIC, Record, image_of
from schemas.topics import DOWN_TOPIC_SCOPES, down_topic

CHUNK: Final = 5000  # records per statement batch (well under SQLite's 32,766 parameters)
SCOPE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
SCOPE_HINTS: Final = {"all": "all", "loc": "loc.<location>", "pos": "pos.<point of sale>"}

_record_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)


# -- scopes --------------------------------------------------------------------------------


def check_scope(topic: str, scope: str) -> str:
    """Return `scope` if `topic` may be published in it; CatalogError saying what to pass if not."""
    kind, _, ident = scope.partition(".")
    if scope != "all" and (kind not in ("loc", "pos", "term") or not SCOPE_ID.fullmatch(ident)):
        raise CatalogError(
            f"invalid scope {scope!r}: expected all, loc.<id>, pos.<id> or term.<id> "
            "(ids of 1-32 letters, digits, '_' or '-')"
        )
    natural = DOWN_TOPIC_SCOPES[topic]
    if kind in (natural, "term"):
        return scope
    hint = SCOPE_HINTS[natural]
    raise CatalogError(f"{topic} records need a scope {hint} (or term.<terminal>), not {scope!r}")


# -- writes --------------------------------------------------------------------------------


def upsert(connection: sa.Connection, record: Record, *, scope: str = "all") -> Change:
    """Create or replace one record in `scope`; return its change (see the module docstring)."""
    return upsert_many(connection, [record], scope=scope)[0]


def upsert_many(
    connection: sa.Connection, records: Iterable[Record], *, scope: str = "all"
) -> list[Change]:
    """Create or replace records (of any topics) in `scope` with a few bulk statements.

    Returns one change per record, in input order: the new one, or the current one for a
    record identical to what is stored. A key given twice gets two versions, in order.
    An invalid record refuses the call before anything is written (see `check_records`).
    """
    records = list(records)
    if not records:
        return []
    check_records(records)
    with _store_errors("upserting catalog records"):
        log = ChangeLog.open(connection, sorted({r.topic for r in records}), scope)
        changes: list[Change] = []
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            log.load(connection, [(r.topic, r.key) for r in chunk])
            changes.extend(log.upsert(record) for record in chunk)
            log.flush(connection)
    return changes


def delete(connection: sa.Connection, topic: str, key: str, *, scope: str = "all") -> Change | None:
    """Turn a record into a tombstone (version raised, body dropped); None if there is none.

    A key that lives in another scope of the topic is a CatalogError naming that scope.
    """
    topic = down_topic(topic)
    with _store_errors(f"deleting {topic} {key}"):
        log = ChangeLog.open(connection, [topic], scope)
        log.load(connection, [(topic, key)])
        change = log.delete(topic, key)
        log.flush(connection)
    return change


def put_image(connection: sa.Connection, data: bytes) -> str:
    """Store an image once, by content; return its sha256 (what records refer to)."""
    return put_images(connection, [data])[0]


def put_images(connection: sa.Connection, images: Sequence[bytes]) -> list[str]:
    """Store images once each, by content; return their sha256s in input order."""
    hashes = [hashlib.sha256(data).hexdigest() for data in images]
    rows = {
        sha: {"sha256": sha, "size": len(data), "data": data, "created_at": _utcnow()}
        for sha, data in zip(hashes, images, strict=True)
    }
    values = list(rows.values())
    with _store_errors("storing images"):
        statement = Dialect(connection.engine).insert(catalog_images).on_conflict_do_nothing()
        for start in range(0, len(values), 500):
            connection.execute(statement, values[start : start + 500])
    return hashes


def check_records(records: Sequence[Record]) -> None:
    """CatalogError with one line per record that breaks its schema or a record rule
    (`record <index> (<key>): <field>: <what is wrong>`); nothing when all are valid."""
    refusals = [
        f"record {index} ({record.key!r}): {problem}"
        for index, record in enumerate(records)
        if (problem := _problem(record)) is not None
    ]
    _refuse(refusals, len(records))


def _problem(record: Record) -> str | None:
    """The record's problems, as a terminal would see it: decoded from its encoding (a Struct
    built in Python is not checked against its types and constraints until then, and a
    float in a Decimal field would decode silently: it is refused first)."""
    problem = python_float_problem(record)
    if problem is not None:
        return problem
    try:
        decoded = _record_decoder.decode(encode(record))
    except msgspec.ValidationError as exc:
        return str(exc)
    return record_problem(decoded)


def _refuse(refusals: list[str], total: int) -> None:
    """Raise the refusals: one line per bad record, under a summary when there are several."""
    if len(refusals) == 1:
        raise CatalogError(f"{refusals[0]}; nothing was written")
    if refusals:
        lines = "\n".join(f"  {line}" for line in refusals)
        raise CatalogError(
            f"{len(refusals)} of {total} records are invalid; nothing was written:\n{lines}"
        )


# -- reads ---------------------------------------------------------------------------------


def get(connection: sa.Connection, topic: str, key: str, scope: str = "all") -> Record | None:
    """The current record of `key` in `scope`, or None when missing or deleted."""
    topic = down_topic(topic)
    with _store_errors(f"reading {topic} {key}"):
        body = connection.execute(
            sa.select(catalog_records.c.body).where(
                catalog_records.c.topic == topic,
                catalog_records.c.scope == scope,
                catalog_records.c.key == key,
                catalog_records.c.deleted.is_(False),
            )
        ).scalar()
    return None if body is None else _record_decoder.decode(body)


def get_image(connection: sa.Connection, sha256: str) -> bytes | None:
    """The bytes of a stored image, or None."""
    with _store_errors("reading an image"):
        return connection.execute(
            sa.select(catalog_images.c.data).where(catalog_images.c.sha256 == sha256)
        ).scalar()


# -- JSON input (what `replica show` prints, what `catalog upsert` reads) -------------------


class _TypeOnly(msgspec.Struct):
    type: str | None = None
    key: Any = None


def records_from_json(topic: str, data: bytes) -> list[Record]:
    """Records of `topic` from a JSON object or array; `type` may be left out where the
    topic has one kind. Bad records are one CatalogError, with a line per bad record
    naming its index, key and field (the record rules included: see `check_records`)."""
    topic = down_topic(topic)
    try:
        raw = msgspec.json.decode(data, type=msgspec.Raw)
        many = bytes(raw).lstrip()[:1] == b"["
        items = msgspec.json.decode(raw, type=list[msgspec.Raw]) if many else [raw]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CatalogError(f"not a JSON object or array of records: {exc}") from exc
    records: list[Record] = []
    refusals: list[str] = []
    for index, item in enumerate(items):
        try:
            record = _record_from_json(topic, index, item)
        except CatalogError as exc:
            refusals.append(str(exc))
            continue
        problem = record_problem(record)
        if problem is not None:
            refusals.append(f"record {index} ({record.key!r}): {problem}")
        records.append(record)
    _refuse(refusals, len(items))
    return records


def _record_from_json(topic: str, index: int, item: msgspec.Raw) -> Record:
    kinds = KINDS_BY_TOPIC[topic]
    where = f"record {index}"
    try:
        head = msgspec.json.decode(item, type=_TypeOnly)
        if isinstance(head.key, str):
            where += f" ({head.key!r})"
        if head.type is None and len(kinds) > 1:
            tags = ", ".join(str(k.__struct_config__.tag) for k in kinds)
            raise CatalogError(f"{where}: {topic} records need a type (one of {tags})")
        kind: Any = Record if head.type is not None else kinds[0]
        record: Record = msgspec.json.decode(item, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    if record.topic != topic:
        raise CatalogError(f"record {index} is a {record.topic} record, not {topic}")
    return record


# -- the change log ------------------------------------------------------------------------


@dataclass
class KeyState:
    """What the catalog holds for one (topic, key), over every scope of the topic."""

    top_version: int = 0  # highest version in any scope, tombstones included
    live_scope: str | None = None  # the scope where it is not deleted, if any
    live_seq: int = 0
    live_body: bytes | None = None


@dataclass
class ChangeLog:
    """The changes of one call: stream heads locked, key states, rows still to write.

    The rules (versions, scopes, identical records skipped, seqs) are here; `open`, `load`
    and `flush` read and write them on SQL, outbox/catalog_store/memory.py in dicts."""

    scope: str
    heads: dict[str, int]  # stream -> head seq (locked for the transaction)
    scopes: dict[str, set[str]]  # topic -> scopes it has streams in
    now: float = field(default_factory=time.time)
    updated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    keys: dict[tuple[str, str], KeyState] = field(default_factory=dict)
    records: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    moved: set[str] = field(default_factory=set)  # streams whose head was raised

    @classmethod
    def open(cls, connection: sa.Connection, topics: list[str], scope: str) -> ChangeLog:
        """Check the scope for every topic, then lock their streams' head rows (in order)."""
        for topic in topics:
            check_scope(topic, scope)
        streams = [stream_name(topic, scope) for topic in topics]
        heads = _lock_heads(connection, streams)
        scopes: dict[str, set[str]] = {topic: {scope} for topic in topics}
        for stream in connection.execute(sa.select(stream_heads.c.stream)).scalars():
            topic, other = split_stream(stream)
            scopes.get(topic, set()).add(other)
        return cls(scope, heads, scopes)

    def load(self, connection: sa.Connection, keys: list[tuple[str, str]]) -> None:
        """Read the stored state of `keys` not seen yet in this call."""
        wanted: dict[str, set[str]] = {}
        for topic, key in keys:
            if (topic, key) not in self.keys:
                self.keys[topic, key] = KeyState()
                wanted.setdefault(topic, set()).add(key)
        for topic, topic_keys in wanted.items():
            for row in _stored(connection, topic, sorted(self.scopes[topic]), sorted(topic_keys)):
                state = self.keys[topic, row.key]
                state.top_version = max(state.top_version, row.version)
                if not row.deleted:
                    state.live_scope, state.live_seq, state.live_body = row.scope, row.seq, row.body

    def upsert(self, record: Record) -> Change:
        """Plan the new version of `record` (or return the current change if identical)."""
        topic, key, stream = record.topic, record.key, stream_name(record.topic, self.scope)
        state = self.keys[topic, key]
        if state.live_scope not in (None, self.scope):
            raise CatalogError(
                f"{topic} {key!r} lives in scope {state.live_scope}; it cannot also be in "
                f"{self.scope} (delete it there first)"
            )
        if state.live_body is not None:
            current = msgspec.structs.replace(record, version=state.top_version)
            if encode(current) == state.live_body:
                return Change(
                    stream=stream, seq=state.live_seq, topic=topic, key=key,
                    version=state.top_version, record=current,
                )  # fmt: skip
        record = msgspec.structs.replace(record, version=state.top_version + 1)
        return self._append(topic, key, record, encode(record))

    def delete(self, topic: str, key: str) -> Change | None:
        """Plan the tombstone of `key`; None when it is missing or already deleted."""
        state = self.keys[topic, key]
        if state.live_scope is None:
            return None
        if state.live_scope != self.scope:
            raise CatalogError(
                f"{topic} {key!r} lives in scope {state.live_scope}, not {self.scope}"
            )
        return self._append(topic, key, None, None)

    def _append(self, topic: str, key: str, record: Record | None, body: bytes | None) -> Change:
        stream = stream_name(topic, self.scope)
        seq = self.heads[stream] + 1
        self.heads[stream] = seq
        self.moved.add(stream)
        state = self.keys[topic, key]
        state.top_version += 1
        state.live_scope = None if record is None else self.scope
        state.live_seq, state.live_body = seq, body
        change = Change(
            stream=stream, seq=seq, topic=topic, key=key, version=state.top_version, record=record
        )
        self.records[topic, key] = {
            "topic": topic,
            "scope": self.scope,
            "key": key,
            "version": state.top_version,
            "seq": seq,
            "deleted": record is None,
            "body": body,
            "image": None if record is None else image_of(record),
            "updated_at": self.updated_at,
        }
        self.changes.append(
            {
                "stream": stream,
                "seq": seq,
                "topic": topic,
                "scope": self.scope,
                "key": key,
                "version": state.top_version,
                "body": encode(change),
                "created_at": self.now,
                "published_at": None,
            }
        )
        return change

    def flush(self, connection: sa.Connection) -> None:
        """Write the planned record rows, change rows and raised stream heads.

        Each flush leaves the catalog consistent, so a caller who catches an error of a
        later chunk and commits anyway keeps a prefix of its changes, never a seq gap.
        """
        dialect = Dialect(connection.engine)
        if self.records:
            insert, params = dialect.bulk_insert(catalog_records, list(self.records.values()))
            columns = ("version", "seq", "deleted", "body", "image", "updated_at")
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=["topic", "scope", "key"],
                    set_={name: insert.excluded[name] for name in columns},
                ),
                params,
            )
        if self.changes:
            connection.execute(*dialect.bulk_insert(change_log, self.changes))
        if self.moved:
            connection.execute(
                stream_heads.update().where(stream_heads.c.stream == sa.bindparam("s")),
                [{"s": stream, "seq": self.heads[stream]} for stream in sorted(self.moved)],
            )
        self.records, self.changes, self.moved = {}, [], set()


def _lock_heads(connection: sa.Connection, streams: list[str]) -> dict[str, int]:
    """Create missing stream heads, then lock them in name order (SELECT ... FOR UPDATE).

    Two back-office writers on one stream serialise here, so they never take the same seq;
    the order keeps writers of several streams from deadlocking. (SQLite: the write lock of
    BEGIN IMMEDIATE already serialises writers.)
    """
    insert = Dialect(connection.engine).insert(stream_heads).on_conflict_do_nothing()
    connection.execute(insert, [{"stream": stream, "seq": 0} for stream in streams])
    rows = connection.execute(
        sa.select(stream_heads.c.stream, stream_heads.c.seq)
        .where(stream_heads.c.stream.in_(streams))
        .order_by(stream_heads.c.stream)
        .with_for_update()
    )
    return {stream: seq for stream, seq in rows}


def _stored(
    connection: sa.Connection, topic: str, scopes: list[str], keys: list[str]
) -> Iterator[Any]:
    """The catalog rows of `keys` of `topic` in any of `scopes` (primary-key lookups).

    PostgreSQL gets the keys as one array joined to the table: a long `IN (...)` list is
    re-parsed for every chunk and filtered row by row, which made seeding quadratic.
    """
    columns = (
        catalog_records.c.scope,
        catalog_records.c.key,
        catalog_records.c.version,
        catalog_records.c.seq,
        catalog_records.c.deleted,
        catalog_records.c.body,
    )
    of_topic = (catalog_records.c.topic == topic, catalog_records.c.scope.in_(scopes))
    if connection.dialect.name == "postgresql":
        wanted = (
            sa.func.unnest(sa.bindparam("keys", type_=postgresql.ARRAY(sa.String)))
            .table_valued("key")
            .render_derived(name="wanted")
        )
        query = (
            sa.select(*columns)
            .select_from(wanted.join(catalog_records, catalog_records.c.key == wanted.c.key))
            .where(*of_topic)
        )
        yield from connection.execute(query, {"keys": keys})
        return
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        yield from connection.execute(
            sa.select(*columns).where(*of_topic, catalog_records.c.key.in_(chunk))
        )


def _store_errors(doing: str) -> AbstractContextManager[None]:
    """Database errors while `doing` become StoreUnavailable (an outage: retry),
    StoreDataError (a value the database refuses) or StoreError (not initialised?)."""
    return translated("server catalog", doing)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
