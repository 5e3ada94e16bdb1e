"""What the till recorded, as compare and diff see it: every operation once, by op id.

An operation is its latest version: the highest-version outbox row, or its slim row in
`cajasync_purged` when a purge removed it (state `purged`). Operations are filtered by
`recorded_at` (cajasync/core/periods.py: the same value as on the server). A weekly file is
counted once, however many chunks it took (chunks are told apart by their week, name and
content hash, read from the outbox body); a purged chunk has no body left, so purged
weekly files are counted in chunks and explained by the purge log.

Reads only, on a connection of the terminal database (cajasync.core.db.reading).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
import sqlalchemy as sa

from cajasync.core.periods import Period
from cajasync.core.terminal_tables import ACKED, PENDING, REJECTED, SENT, outbox, purged, purges
from schemas.topics import WEEKLY_FILES

PURGED: Final = "purged"
# A file's state is the least settled of its chunks'.
_FILE_ORDER: Final = (REJECTED, PENDING, SENT, ACKED, PURGED)


class RecordedOp(NamedTuple):
    """One operation of the till at its latest version."""

    op_id: str
    version: int
    state: str  # pending, sent, acked, rejected or purged


class Purge(NamedTuple):
    """One purge of the till that removed operations of a topic."""

    purged_at: dt.datetime
    user: str
    rows: int  # outbox rows it removed of the topic


class _Chunk(msgspec.Struct):
    week: str
    file_name: str
    sha256: str


class _ChunkEnvelope(msgspec.Struct):
    op: _Chunk


_chunk_decoder = msgspec.msgpack.Decoder(_ChunkEnvelope)


def recorded_ops(connection: sa.Connection, topic: str, period: Period) -> dict[str, RecordedOp]:
    """The till's operations of `topic` recorded in `period`, by op id, latest version."""
    ops: dict[str, RecordedOp] = {}
    for op_id, version, state in _rows(connection, topic, period):
        held = ops.get(op_id)
        if held is None or held.version < version:
            ops[op_id] = RecordedOp(op_id, version, state)
    return ops


def state_counts(connection: sa.Connection, topic: str, period: Period) -> dict[str, int]:
    """Operations of `topic` per state (weekly files: files per state, purged chunks)."""
    ops = recorded_ops(connection, topic, period)
    if topic != WEEKLY_FILES:
        return dict(Counter(op.state for op in ops.values()))
    files: dict[tuple[str, str, str], str] = {}
    for op_id, body in _chunk_bodies(connection, period):
        op = ops.get(op_id)
        if op is None:
            continue
        file = _chunk_file(body)
        files[file] = min(files.get(file, PURGED), op.state, key=_FILE_ORDER.index)
    purged_chunks = sum(op.state == PURGED for op in ops.values())
    counts = Counter(files.values())
    if purged_chunks:
        counts[PURGED] = purged_chunks
    return dict(counts)


def op_counts(connection: sa.Connection, topics: Iterable[str], period: Period) -> dict[str, int]:
    """Operations of each of `topics` recorded in `period`, as `state_counts` adds them up
    for compare (weekly files: files, not counting purged chunks), in one grouped COUNT
    over the outbox and the purge's slim rows: cheap enough to repeat every second or two
    on a till with a large outbox."""
    o, p = outbox.c, purged.c
    live = _within(sa.select(o.topic, o.op_id), o, period)
    gone = _within(sa.select(p.topic, p.op_id), p, period)
    ops = sa.union(live, gone).subquery()
    query = sa.select(ops.c.topic, sa.func.count()).group_by(ops.c.topic)
    counted = {topic: int(n) for topic, n in connection.execute(query)}
    found = {topic: counted.get(topic, 0) for topic in topics}
    if found.get(WEEKLY_FILES):
        states = state_counts(connection, WEEKLY_FILES, period)
        found[WEEKLY_FILES] = sum(n for state, n in states.items() if state != PURGED)
    return found


def topic_purges(connection: sa.Connection, topic: str) -> list[Purge]:
    """The purges that removed operations of `topic`, oldest first."""
    query = sa.select(purges.c.purged_at, purges.c.user, purges.c.counts).order_by(purges.c.id)
    found = []
    for row in connection.execute(query):
        rows = int(json.loads(row.counts).get(topic, {}).get("rows", 0))
        if rows:
            found.append(Purge(_utc(row.purged_at), row.user, rows))
    return found


def _rows(connection: sa.Connection, topic: str, period: Period) -> Iterable[tuple[str, int, str]]:
    o, p = outbox.c, purged.c
    live = _within(sa.select(o.op_id, o.version, o.state).where(o.topic == topic), o, period)
    gone = _within(sa.select(p.op_id, p.version).where(p.topic == topic), p, period)
    for row in connection.execute(live):
        yield row.op_id, row.version, row.state
    for slim in connection.execute(gone):
        yield slim.op_id, slim.version, PURGED


def _chunk_bodies(connection: sa.Connection, period: Period) -> Iterable[tuple[str, bytes]]:
    o = outbox.c
    query = _within(sa.select(o.op_id, o.body).where(o.topic == WEEKLY_FILES), o, period)
    for row in connection.execute(query):
        yield row.op_id, row.body


def _chunk_file(body: bytes) -> tuple[str, str, str]:
    chunk = _chunk_decoder.decode(body).op
    return chunk.week, chunk.file_name, chunk.sha256


S = TypeVar("S", bound=sa.Select[Any])


def _within(query: S, columns: Any, period: Period) -> S:
    """`query` narrowed to rows recorded in `period` (`columns`: the table's `.c`)."""
    since, until = period.utc()
    if since is not None:
        query = query.where(columns.recorded_at >= since)
    if until is not None:
        query = query.where(columns.recorded_at < until)
    return query


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
