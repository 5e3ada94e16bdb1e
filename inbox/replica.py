"""Terminal side of the down flow: change events, snapshots and images into the replica.

    requests = apply_down(connection, message, identity, size=len(body), memory=memory)

Pure database functions on the caller's connection and transaction (no broker), like
inbox/receipts.py, so the relay applies a tick's worth of messages in one commit and the
rules are tested on SQLite alone. Every message is a handful of bulk statements: a page
of 1,000 records is one executemany upsert, never a round trip per record.

The rules:

* A record is written only when the change's version is newer than the replica's, so
  events may arrive twice or out of order; a delete keeps its version as a tombstone, so
  an older upsert never brings the record back.
* A stream's position is its last contiguous seq applied. A live change at position+1
  advances it; one at or below it was applied already and is skipped; one beyond a gap
  is applied anyway (the version rule makes that safe) without moving the position, and
  the terminal asks the server for a catch-up from position+1, once per gap.
* A change event may carry stream heads (the feed relay sends them periodically, without
  changes): a stream the terminal follows (it has a position, or a pull brought its topic)
  whose position is below its head lost its last changes, and the terminal asks for a
  catch-up from position+1 like for any gap, even when no later change ever comes.
* A snapshot's pages go in by the version rule; its `SnapshotDone` moves each stream to
  at least its high-water seq, so live events the pages already hold are skipped after.
* A record that breaks the record rules (schemas/record_rules.py: a NaN price, a blank
  name, ...) or is not of its change's topic is refused with an error in the log: the
  replica keeps what it had, and a live change still counts as seen for its stream's
  position (the server holds that version; asking again would bring it back unchanged).
* A record the terminal must not hold (a hotel room on a restaurant's till: schemas.records
  `for_terminal`) is applied as a tombstone of its version: live events of the shared
  `mesas` stream carry both kinds, and a record that changed kind must leave.
* Every row keeps the scope and seq of the change that wrote it (which location a stock
  record belongs to). Every snapshot page stamps the keys it lists with its pull; once a
  pull's records are all in, each stream the server sent whole loses the live records the
  pages did not list (`sweep`: tombstoned with their version), except those a live change
  past the snapshot's high-water wrote (their seq is above it).
* A pull naming keys (or another location's stock) is no refresh of its topics: its
  high-water is empty, so no position moves, and it does not count as having pulled them.
* A catch-up the server can no longer answer from its change log (compacted past the
  position: outbox/compaction.py) comes back as a refresh of the stream: pages of the
  records changed since the position and a `SnapshotDone` naming the stream `compacted`,
  whose high-water moves the position to the head like any refresh's. Nothing to ask.
* Images are stored once by content address, only when their sha256 checks out. On a till
  that keeps images (a pull with images finished once), a live change referring to an
  image it lacks asks for it at once (an ImageRequest outside any pull).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from cajasync.core.identity import TerminalIdentity
from cajasync.core.terminal_tables import images, pulls, replica, streams
from schemas.codec import encode
from schemas.feed import (
    CATCH_UP_REFRESH,
    CatchUpRequest,
    Change,
    ChangeEvent,
    ImageData,
    ImageRequest,
    ImagesDone,
    RawChange,
    RawSnapshotPage,
    SnapshotDone,
    SnapshotPage,
    split_stream,
)
from schemas.floats import float_problem
from schemas.record_rules import record_problem
from schemas.records import Record, for_terminal, image_of
from schemas.unions import Request

if TYPE_CHECKING:  # imported where it runs (`_insert`)
    from sqlalchemy.dialects import postgresql

log = logging.getLogger(__name__)

FeedMessage = ChangeEvent | SnapshotPage | RawSnapshotPage | SnapshotDone | ImageData | ImagesDone

# Pull states (cajasync_pulls.status).
REQUESTED = "requested"  # the snapshot is streaming
FETCHING_IMAGES = "images"  # records are in; the images the terminal lacks are coming
DONE = "done"
ABANDONED = "abandoned"  # the puller gave up (timeout, Ctrl-C); late replies still apply

# A pull still streaming covers its topics' gaps (its high-water fixes them) for this long.
PULL_COVERS_S = 900.0
IN_CHUNK = 5000  # bound parameters per IN (SQLite allows 32,766)


@dataclass
class FeedMemory:
    """What one consumer remembers between messages, beyond what the database holds.

    `ahead`: seqs applied past a gap, per stream, so the position can jump over them once
    the gap is filled. `asked`: the catch-up last requested per stream and when, so a gap
    is asked for once, and again only if no answer filled it within `retry_after_s`.
    Forget it all when the broker session ends (unacked messages come again anyway).
    """

    retry_after_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    ahead: dict[str, set[int]] = field(default_factory=dict)
    asked: dict[str, tuple[int, float]] = field(default_factory=dict)
    images_asked: set[str] = field(default_factory=set)  # by live changes, this session

    def advance(self, stream: str, position: int, seqs: Iterable[int]) -> int:
        """Record `seqs` applied on top of `position`; the new contiguous position."""
        ahead = self.ahead.setdefault(stream, set())
        ahead.update(seq for seq in seqs if seq > position)
        while position + 1 in ahead:
            position += 1
        ahead.difference_update([seq for seq in ahead if seq <= position])
        if not ahead:
            del self.ahead[stream]
        return position

    def gap_after(self, stream: str) -> bool:
        """True when seqs beyond a gap were applied on this stream."""
        return bool(self.ahead.get(stream))

    def should_ask(self, stream: str, from_seq: int) -> bool:
        """Whether to request a catch-up from `from_seq` now (and remember that we did).

        Not while a recent request from `from_seq` or earlier is pending: its answer
        replays the stream from there on, so it covers this gap too.
        """
        now = self.clock()
        last = self.asked.get(stream)
        if last is not None and last[0] <= from_seq and now - last[1] < self.retry_after_s:
            return False
        self.asked[stream] = (from_seq, now)
        return True

    def forget(self) -> None:
        """Drop everything (a new broker session starts from what the database says)."""
        self.ahead.clear()
        self.asked.clear()
        self.images_asked.clear()


def apply_down(
    connection: sa.Connection,
    message: FeedMessage,
    identity: TerminalIdentity,
    *,
    size: int | None = None,
    memory: FeedMemory | None = None,
) -> list[Request]:
    """Apply one server message to the replica; return the requests the terminal must send.

    `size` is the length of the message body as received (the pull's byte count; encoded
    again when not given). Without a `memory` each call starts afresh, so gaps are asked
    for on every call: the relay passes one per broker session.
    """
    memory = FeedMemory() if memory is None else memory
    now = time.time()
    if isinstance(message, ChangeEvent):
        return _apply_live(connection, message, identity, memory, now)
    nbytes = len(encode(message)) if size is None else size
    if isinstance(message, RawSnapshotPage):
        upsert_raw(connection, message.changes, now, identity.kind)
        _list(connection, message.request_id, message.changes)
        _count(connection, message.request_id, records=len(message.changes), nbytes=nbytes)
        return _complete_records(connection, message.request_id, identity, now)
    if isinstance(message, SnapshotPage):
        upsert(connection, message.changes, now, identity.kind)
        _list(connection, message.request_id, message.changes)
        _count(connection, message.request_id, records=len(message.changes), nbytes=nbytes)
        return _complete_records(connection, message.request_id, identity, now)
    if isinstance(message, SnapshotDone):
        return _finish_snapshot(connection, message, identity, memory, nbytes, now)
    if isinstance(message, ImageData):
        store_image(connection, message, now)
        _count(connection, message.request_id, image_count=1, image_bytes=nbytes)
        _complete_images(connection, message.request_id, now)
        return []
    _finish_images(connection, message, now)
    return []


def coalesce(messages: Iterable[tuple[FeedMessage, int]]) -> list[tuple[FeedMessage, int]]:
    """Merge adjacent change events (and add up their sizes), keeping everything in order.

    The rules do not depend on how changes are batched, so a tick's worth of live events
    is applied with one position read, one upsert and one position write. Heads merge to
    the highest per stream: they are checked once the run's changes are in, and a head
    only ever says what went out before it.
    """
    merged: list[tuple[FeedMessage, int]] = []
    run: list[ChangeEvent] = []
    run_size = 0
    for message, size in messages:
        if isinstance(message, ChangeEvent):
            run.append(message)
            run_size += size
            continue
        if run:
            merged.append((_merged(run), run_size))
            run, run_size = [], 0
        merged.append((message, size))
    if run:
        merged.append((_merged(run), run_size))
    return merged


def _merged(events: list[ChangeEvent]) -> ChangeEvent:
    if len(events) == 1:
        return events[0]
    heads: dict[str, int] = {}
    for event in events:
        for stream, seq in event.heads.items():
            heads[stream] = max(seq, heads.get(stream, 0))
    return ChangeEvent(changes=[c for event in events for c in event.changes], heads=heads)


# -- records --------------------------------------------------------------------------------


def upsert(
    connection: sa.Connection,
    changes: Sequence[Change],
    now: float,
    terminal_kind: str | None = None,
) -> None:
    """Write every change whose version is newer than the replica's, in one executemany
    (as a tombstone, a record a terminal of `terminal_kind` must not hold).

    The statement goes straight to the driver: SQLAlchemy's per-row parameter processing
    would cost more than SQLite's own work on a 1,000-record page.
    """
    rows = rows_of(changes, now, terminal_kind)
    if not rows:
        return
    sql, positional = _upsert_sql(connection)
    if positional:
        connection.exec_driver_sql(sql, rows)
    else:
        connection.exec_driver_sql(sql, [dict(zip(_COLUMNS, row, strict=True)) for row in rows])


def rows_of(
    changes: Sequence[Change], now: float, terminal_kind: str | None = None
) -> list[ReplicaRow]:
    """The replica rows of the changes the replica may hold (`_acceptable`), in `_COLUMNS`
    order: (topic, key, version, deleted, body, image, applied_at, scope, seq); a record a
    terminal of `terminal_kind` must not hold becomes a tombstone."""
    return [_row(change, now, terminal_kind) for change in changes if _acceptable(change)]


def upsert_raw(
    connection: sa.Connection,
    changes: Sequence[RawChange],
    now: float,
    terminal_kind: str | None = None,
) -> None:
    """`upsert` for a page whose records stayed encoded: each is decoded and checked like a
    live one (`_acceptable`), then its bytes are stored as they came (re-encoded only when
    its key or version differ from its change's); one that is no record at all or is
    refused is skipped with an error in the log."""
    rows = [row for change in changes if (row := _raw_row(change, now, terminal_kind)) is not None]
    if not rows:
        return
    sql, positional = _upsert_sql(connection)
    if positional:
        connection.exec_driver_sql(sql, rows)
    else:
        connection.exec_driver_sql(sql, [dict(zip(_COLUMNS, row, strict=True)) for row in rows])


_record_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)


def _raw_row(change: RawChange, now: float, terminal_kind: str | None) -> ReplicaRow | None:
    raw = change.record
    scope = split_stream(change.stream)[1]
    if change.deleted:
        return (change.topic, change.key, change.version, True, None, None, now, scope, change.seq)
    try:
        record = _record_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error(
            "dropping %s %s v%d: not a record (%s)", change.topic, change.key, change.version, exc
        )
        return None
    problem = float_problem(bytes(raw), record)
    if problem is not None:
        log.error(
            "refusing %s %r v%d from the server: %s; the replica keeps what it had",
            change.topic,
            change.key,
            change.version,
            problem,
        )
        return None
    full = Change(
        stream=change.stream,
        seq=change.seq,
        topic=change.topic,
        key=change.key,
        version=change.version,
        record=record,
    )
    if not _acceptable(full):
        return None
    if not for_terminal(record, terminal_kind):
        return _row(full, now, terminal_kind)
    if record.key == change.key and record.version == change.version:
        image = image_of(record)
        return (
            change.topic,
            change.key,
            change.version,
            False,
            bytes(raw),
            image,
            now,
            scope,
            change.seq,
        )
    return _row(full, now, terminal_kind)


def _acceptable(change: Change) -> bool:
    """False (and an error in the log) for a record the replica must not hold: one of
    another topic than its change's, or one that breaks the record rules."""
    record = change.record
    if record is None:
        return True
    problem = (
        f"a {record.topic} record in a {change.topic} change"
        if record.topic != change.topic
        else record_problem(record)
    )
    if problem is None:
        return True
    log.error(
        "refusing %s %r v%d (%s seq %d) from the server: %s; the replica keeps what it had",
        change.topic,
        change.key,
        change.version,
        change.stream,
        change.seq,
        problem,
    )
    return False


_COLUMNS = ("topic", "key", "version", "deleted", "body", "image", "applied_at", "scope", "seq")
ReplicaRow = tuple[str, str, int, bool, bytes | None, str | None, float, str, int]


def _row(change: Change, now: float, terminal_kind: str | None = None) -> ReplicaRow:
    """The replica row of a change, in `_COLUMNS` order; a tombstone has no body, and a
    record a terminal of `terminal_kind` must not hold is one."""
    record = change.record
    topic, key, version, seq = change.topic, change.key, change.version, change.seq
    scope = split_stream(change.stream)[1]
    if record is None or not for_terminal(record, terminal_kind):
        return (topic, key, version, True, None, None, now, scope, seq)
    if record.version != version or record.key != key:
        record = msgspec.structs.replace(record, key=key, version=version)
    return (topic, key, version, False, encode(record), image_of(record), now, scope, seq)


_UPSERTS: dict[str, tuple[str, bool]] = {}


def _insert(dialect: str, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's own INSERT (it has ON CONFLICT). PostgreSQL's is imported where it
    runs only: a till never needs it, and it cost the till's window 0.03 s to start."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    return sqlite.insert(table)


def _upsert_sql(connection: sa.Connection) -> tuple[str, bool]:
    """INSERT … ON CONFLICT(topic, key) DO UPDATE … WHERE the incoming version is newer.

    Compiled once per dialect; returns the SQL and whether its parameters are positional.
    """
    dialect = connection.dialect
    if dialect.name not in _UPSERTS:
        insert = _insert(dialect.name, replica)
        insert = insert.values({name: sa.bindparam(name) for name in _COLUMNS})
        statement = insert.on_conflict_do_update(
            index_elements=[replica.c.topic, replica.c.key],
            set_={name: insert.excluded[name] for name in _COLUMNS[2:]},
            where=insert.excluded.version > replica.c.version,
        )
        compiled = statement.compile(dialect=dialect)
        assert not compiled.positional or compiled.positiontup == list(_COLUMNS)
        _UPSERTS[dialect.name] = (compiled.string, compiled.positional)
    return _UPSERTS[dialect.name]


# -- streams --------------------------------------------------------------------------------


def positions(connection: sa.Connection, names: Iterable[str] | None = None) -> dict[str, int]:
    """Position (last contiguous seq applied) of the named streams that have one, or of all."""
    query = sa.select(streams.c.stream, streams.c.position)
    if names is None:
        return {row.stream: row.position for row in connection.execute(query)}
    found: dict[str, int] = {}
    wanted = list(names)
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start : start + IN_CHUNK]
        rows = connection.execute(query.where(streams.c.stream.in_(chunk)))
        found.update({row.stream: row.position for row in rows})
    return found


def _move(connection: sa.Connection, moved: dict[str, int], now: float) -> None:
    """Raise the positions of streams (never lower one), creating rows as needed."""
    if not moved:
        return
    dialect = connection.dialect.name
    insert = _insert(dialect, streams)
    statement = insert.on_conflict_do_update(
        index_elements=[streams.c.stream],
        set_={"position": insert.excluded.position, "updated_at": insert.excluded.updated_at},
        where=insert.excluded.position > streams.c.position,
    )
    rows = [{"stream": s, "position": p, "updated_at": now} for s, p in moved.items()]
    connection.execute(statement, rows)


def _apply_live(
    connection: sa.Connection,
    event: ChangeEvent,
    identity: TerminalIdentity,
    memory: FeedMemory,
    now: float,
) -> list[Request]:
    """Apply live changes past each stream's position; advance it; ask for any gap, and
    for the streams the event's heads show behind."""
    by_stream: dict[str, list[Change]] = {}
    for change in event.changes:
        by_stream.setdefault(change.stream, []).append(change)
    current = positions(connection, by_stream)
    fresh: list[Change] = []
    moved: dict[str, int] = {}
    for stream, group in by_stream.items():
        position = current.get(stream, 0)
        new = [change for change in group if change.seq > position]
        fresh += new
        advanced = memory.advance(stream, position, (change.seq for change in new))
        if advanced > position:
            moved[stream] = advanced
    upsert(connection, fresh, now, identity.kind)
    _move(connection, moved, now)
    after = {stream: moved.get(stream, current.get(stream, 0)) for stream in by_stream}
    gaps = {stream: position for stream, position in after.items() if memory.gap_after(stream)}
    gaps.update(_behind(connection, event.heads, after))
    requests = _catch_ups(connection, gaps, identity, memory, now)
    return requests + _live_images(connection, fresh, identity, memory)


def _live_images(
    connection: sa.Connection,
    fresh: Sequence[Change],
    identity: TerminalIdentity,
    memory: FeedMemory,
) -> list[Request]:
    """An ImageRequest for the images live changes refer to that the terminal lacks, when
    it keeps images (a pull with images finished once) and has not asked for them yet."""
    referred = {
        sha
        for change in fresh
        if change.record is not None
        and for_terminal(change.record, identity.kind)
        and (sha := image_of(change.record)) is not None
    }
    referred -= memory.images_asked
    if not referred or not keeps_images(connection):
        return []
    held = connection.execute(sa.select(images.c.sha256).where(images.c.sha256.in_(referred)))
    lacking = sorted(referred - set(held.scalars()))
    memory.images_asked.update(lacking)
    if not lacking:
        return []
    log.info("terminal %s: fetching %d new image(s)", identity.terminal, len(lacking))
    request_id = f"live-{uuid.uuid4()}"
    return [ImageRequest(terminal=identity.terminal, request_id=request_id, hashes=lacking)]


def keeps_images(connection: sa.Connection) -> bool:
    """True once a pull with images has brought its records (the till keeps images)."""
    query = sa.select(pulls.c.request_id).where(
        pulls.c.images.is_(True), pulls.c.status.in_([DONE, FETCHING_IMAGES])
    )
    return connection.execute(query.limit(1)).first() is not None


def _behind(
    connection: sa.Connection, heads: dict[str, int], known: dict[str, int]
) -> dict[str, int]:
    """Position of each followed stream that is below its head: its last changes were lost.

    A stream is followed when it has a position (`known` ones first, then the database) or
    when a finished pull brought its topic (a stream still empty then has no position).
    A stream the terminal never pulled nor heard of is left to the pull that bootstraps it.
    """
    if not heads:
        return {}
    current = positions(connection, [s for s in heads if s not in known])
    current.update({s: p for s, p in known.items() if s in heads})
    unknown = [stream for stream in heads if stream not in current]
    if unknown:
        pulled = _pulled_topics(connection)
        current.update({s: 0 for s in unknown if split_stream(s)[0] in pulled})
    return {s: p for s, p in current.items() if heads[s] > p}


_REFRESHES = (pulls.c["keys"].is_(None), pulls.c.location.is_(None))  # pulls of whole topics


def _pulled_topics(connection: sa.Connection) -> set[str]:
    """Topics of every pull of whole topics whose records all came in."""
    rows = connection.execute(
        sa.select(pulls.c.topics)
        .distinct()
        .where(pulls.c.status.in_([DONE, FETCHING_IMAGES]), *_REFRESHES)
    )
    return {topic for row in rows for topic in json.loads(row.topics)}


def _catch_ups(
    connection: sa.Connection,
    gaps: dict[str, int],
    identity: TerminalIdentity,
    memory: FeedMemory,
    now: float,
) -> list[Request]:
    """One CatchUpRequest per stream with a gap after its position (`gaps`: stream ->
    position), unless a pull will close it anyway or one was asked for recently."""
    if not gaps:
        return []
    pulling = _topics_being_pulled(connection, now)
    requests: list[Request] = []
    for stream, position in gaps.items():
        if split_stream(stream)[0] in pulling:
            continue
        if memory.should_ask(stream, position + 1):
            log.info("terminal %s: gap in %s after seq %d", identity.terminal, stream, position)
            requests.append(
                CatchUpRequest(
                    terminal=identity.terminal,
                    location=identity.location,
                    pos=identity.pos,
                    terminal_kind=identity.kind,
                    stream=stream,
                    from_seq=position + 1,
                )
            )
    return requests


def _topics_being_pulled(connection: sa.Connection, now: float) -> set[str]:
    """Topics of snapshots still streaming: their high-water will close gaps there."""
    rows = connection.execute(
        sa.select(pulls.c.topics).where(
            pulls.c.status == REQUESTED, pulls.c.started_at > now - PULL_COVERS_S, *_REFRESHES
        )
    )
    return {topic for row in rows for topic in json.loads(row.topics)}


# -- snapshots and images -------------------------------------------------------------------


def start_pull(
    connection: sa.Connection,
    request_id: str,
    topics: Sequence[str],
    *,
    full: bool,
    images: bool,
    now: float | None = None,
    keys: Sequence[str] = (),
    location: str | None = None,
) -> None:
    """Record a pull the terminal is about to request (its progress and outcome go here);
    `keys` or another `location` make it a pull of some records, not of its topics."""
    connection.execute(
        pulls.insert().values(
            request_id=request_id,
            topics=json.dumps(list(topics)),
            full=full,
            images=images,
            keys=json.dumps(list(keys)) if keys else None,
            location=location,
            status=REQUESTED,
            records=0,
            bytes=0,
            image_count=0,
            image_bytes=0,
            started_at=time.time() if now is None else now,
        )
    )


def _count(
    connection: sa.Connection,
    request_id: str,
    *,
    records: int = 0,
    nbytes: int = 0,
    image_count: int = 0,
    image_bytes: int = 0,
) -> None:
    connection.execute(
        pulls.update()
        .where(pulls.c.request_id == request_id)
        .values(
            records=pulls.c.records + records,
            bytes=pulls.c.bytes + nbytes,
            image_count=pulls.c.image_count + image_count,
            image_bytes=pulls.c.image_bytes + image_bytes,
        )
    )


def _finish_snapshot(
    connection: sa.Connection,
    done: SnapshotDone,
    identity: TerminalIdentity,
    memory: FeedMemory,
    nbytes: int,
    now: float,
) -> list[Request]:
    """Raise positions to the high-water; then the images the terminal lacks, if asked for."""
    current = positions(connection, done.high_water)
    for stream in done.compacted:
        log.info(
            "terminal %s: %s refreshed from seq %d to %d (the server's change log no longer "
            "reaches back that far)",
            identity.terminal,
            stream,
            current.get(stream, 0),
            done.high_water.get(stream, 0),
        )
    after: dict[str, int] = {}
    for stream, high_water in done.high_water.items():
        position = current.get(stream, 0)
        after[stream] = memory.advance(stream, max(position, high_water), ())
    _move(connection, {s: p for s, p in after.items() if p > current.get(s, 0)}, now)
    _count(connection, done.request_id, nbytes=nbytes)
    connection.execute(
        pulls.update()
        .where(pulls.c.request_id == done.request_id)
        .values(
            high_water=json.dumps(done.high_water),
            expected_records=done.records,
            whole=json.dumps(done.whole),
            missing_keys=json.dumps(done.missing_keys),
        )
    )
    requests = _complete_records(connection, done.request_id, identity, now, done.images)
    gaps = {stream: position for stream, position in after.items() if memory.gap_after(stream)}
    return requests + _catch_ups(connection, gaps, identity, memory, now)


def _complete_records(
    connection: sa.Connection,
    request_id: str,
    identity: TerminalIdentity,
    now: float,
    listed_images: Iterable[str] = (),
) -> list[Request]:
    """Once every record the server sent is applied (pages may trail the "done" when two
    consumers share the queue), ask for the images the terminal lacks, or finish."""
    columns = (pulls.c.status, pulls.c.records, pulls.c.expected_records, pulls.c.images)
    row = connection.execute(
        sa.select(*columns, pulls.c.whole, pulls.c.high_water).where(
            pulls.c.request_id == request_id
        )
    ).first()
    if row is None or row.status != REQUESTED or row.expected_records is None:
        return []
    if row.records < row.expected_records:
        return []  # the last pages are still on their way
    whole = json.loads(row.whole) if row.whole else []
    high_water = json.loads(row.high_water) if row.high_water else {}
    removed = sweep(connection, request_id, whole, high_water, now)
    missing = missing_images(connection, listed_images) if row.images else []
    status = FETCHING_IMAGES if missing else DONE
    connection.execute(
        pulls.update()
        .where(pulls.c.request_id == request_id)
        .values(status=status, finished_at=now if status == DONE else None, removed=removed)
    )
    if not missing:
        return []
    return [ImageRequest(terminal=identity.terminal, request_id=request_id, hashes=missing)]


def _list(
    connection: sa.Connection, request_id: str, changes: Sequence[RawChange | Change]
) -> None:
    """Stamp the keys a snapshot page lists with its pull (a whole stream keeps them).

    A refresh answering a catch-up (the server's change log was compacted) is no pull and
    sends no stream whole: it stamps nothing, so a pull streaming meanwhile keeps its marks.
    """
    if request_id.startswith(CATCH_UP_REFRESH):
        return
    by_topic: dict[str, list[str]] = {}
    for change in changes:
        by_topic.setdefault(change.topic, []).append(change.key)
    for topic, keys in by_topic.items():
        for start in range(0, len(keys), IN_CHUNK):
            connection.execute(
                replica.update()
                .where(replica.c.topic == topic, replica.c.key.in_(keys[start : start + IN_CHUNK]))
                .values(listed_by=request_id)
            )


def sweep(
    connection: sa.Connection,
    request_id: str,
    whole: Iterable[str],
    high_water: dict[str, int],
    now: float,
) -> int:
    """Tombstone the live records of each stream sent whole that its pages did not list:
    they are not on the server any more (a stray survives nothing but a newer live change,
    whose seq is above the stream's high-water). How many were removed."""
    removed = 0
    for stream in whole:
        topic, scope = split_stream(stream)
        statement = (
            replica.update()
            .where(
                replica.c.topic == topic,
                replica.c.scope == scope,
                sa.not_(replica.c.deleted),
                sa.or_(replica.c.listed_by.is_(None), replica.c.listed_by != request_id),
                sa.or_(replica.c.seq.is_(None), replica.c.seq <= high_water.get(stream, 0)),
            )
            .values(deleted=True, body=None, image=None, applied_at=now)
        )
        count = connection.execute(statement).rowcount
        if count:
            log.info(
                "pull %s: %d record(s) of %s not on the server removed", request_id, count, stream
            )
        removed += count
    return removed


def _complete_images(connection: sa.Connection, request_id: str, now: float) -> None:
    """Finish an image fetch once every image the server said it sent is stored."""
    connection.execute(
        pulls.update()
        .where(
            pulls.c.request_id == request_id,
            pulls.c.status.in_([REQUESTED, FETCHING_IMAGES]),
            pulls.c.expected_images.is_not(None),
            pulls.c.image_count >= pulls.c.expected_images,
        )
        .values(status=DONE, finished_at=now)
    )


def missing_images(connection: sa.Connection, listed: Iterable[str] = ()) -> list[str]:
    """Hashes listed or referenced by live records that `cajasync_images` does not hold."""
    referenced = connection.execute(
        sa.select(replica.c.image)
        .distinct()
        .select_from(replica.outerjoin(images, images.c.sha256 == replica.c.image))
        .where(replica.c.image.is_not(None), sa.not_(replica.c.deleted), images.c.sha256.is_(None))
    )
    wanted = {row.image for row in referenced}
    extra = sorted(set(listed) - wanted)
    for start in range(0, len(extra), IN_CHUNK):
        chunk = extra[start : start + IN_CHUNK]
        held = connection.execute(sa.select(images.c.sha256).where(images.c.sha256.in_(chunk)))
        wanted.update(set(chunk) - {row.sha256 for row in held})
    return sorted(wanted)


def store_image(connection: sa.Connection, image: ImageData, now: float) -> bool:
    """Store an image once by its sha256; False (and a warning) when the bytes do not match."""
    if not image_matches(image):
        return False
    dialect = connection.dialect.name
    insert = _insert(dialect, images)
    connection.execute(
        insert.on_conflict_do_nothing(index_elements=[images.c.sha256]).values(
            sha256=image.sha256, size=len(image.data), data=image.data, stored_at=now
        )
    )
    return True


def image_matches(image: ImageData) -> bool:
    """True when the image's bytes have its sha256; else False and a warning."""
    actual = hashlib.sha256(image.data).hexdigest()
    if actual != image.sha256:
        log.warning(
            "image %s of request %s does not match its content (sha256 %s); not stored",
            image.sha256,
            image.request_id,
            actual,
        )
        return False
    return True


def _finish_images(connection: sa.Connection, done: ImagesDone, now: float) -> None:
    if done.missing:
        log.warning(
            "request %s: the server has no image for %d hash(es), e.g. %s",
            done.request_id,
            len(done.missing),
            done.missing[0],
        )
    connection.execute(
        pulls.update()
        .where(pulls.c.request_id == done.request_id)
        .values(expected_images=done.sent)
    )
    _complete_images(connection, done.request_id, now)
