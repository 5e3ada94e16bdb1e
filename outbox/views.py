"""The till's operations of one topic as a technician reads them ("Ventas: visualizar").

One row per operation (its latest version): its business columns (ticket number, date,
total, customer; payee and amount; Z number and period), its local state, and, when a
`server` lookup is given, what the server holds of it. A weekly file is one row per file
(name, week, size, sha256, chunks held of the total, the worst state of its chunks),
never its chunks. Operations a purge removed (`cajasync_purged`) are listed as `purged`,
without columns: their bodies are gone.

Only the page's bodies are decoded, and only their summaries (schemas/summaries.py); the
total is counted in SQL. Filtering by customer or number reads the summaries of every
operation of the topic in the period, since those fields live in the encoded body.

    listing = list_operations(engine, "ventas", period=Period.parse(...), limit=50)
    listing.total, [row.details["number"] for row in listing.rows]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.periods import Period
from cajasync.core.store_faults import terminal_connection
from cajasync.core.terminal_tables import ACKED, PENDING, REJECTED, SENT, STATES, outbox, purged
from cajasync.errors import BrokerUnavailable, ConfigError, NoAnswer
from schemas.summaries import ChunkSummary, columns, matches, summary_or_reason
from schemas.topics import SALES, WEEKLY_FILES, Z_CLOSES, up_topic

PURGED: Final = "purged"
VIEW_STATES: Final[tuple[str, ...]] = (*STATES, PURGED)
# A file's state is its worst chunk's: the first of these any chunk is in.
WORST_FIRST: Final[tuple[str, ...]] = (REJECTED, PENDING, SENT, ACKED, PURGED)
NUMBERED: Final = frozenset({SALES, Z_CLOSES})
ALL_DATES: Final = Period()


class ServerHeld(msgspec.Struct, frozen=True, kw_only=True):
    """What the server holds of one operation: its latest version received, when, and its
    status there (applied, stale, rejected with the reason)."""

    version: int
    received_at: dt.datetime
    status: str
    reason: str = ""


ServerLookup = Callable[[list[str]], dict[str, ServerHeld]]
"""Asks the server about op ids; answers only for those it holds."""


class OpView(msgspec.Struct, kw_only=True):
    """One operation of the till, at its latest version."""

    topic: str
    op_id: str
    seq: int
    version: int
    state: str
    recorded_at: dt.datetime
    attempts: int | None
    last_error: str | None
    details: dict[str, Any]
    server: ServerHeld | None = None


class FileView(msgspec.Struct, kw_only=True):
    """One weekly file of the till, summarised from its chunks. A file whose chunks were
    purged has no name (the bodies are gone): one row per purge, its chunks counted."""

    topic: str
    file_name: str | None
    week: str | None
    size: int | None
    sha256: str | None
    chunks_held: int
    chunk_count: int | None
    state: str
    recorded_at: dt.datetime
    op_ids: list[str]
    seq: int  # its last chunk's
    server_chunks: int | None = None  # chunks the server holds (None: not asked)
    server_received_at: dt.datetime | None = None


class Listing(msgspec.Struct, kw_only=True):
    """A page of one topic's operations, the total matching the filters, and whether the
    server was asked (`server_asked`; False with `--local` or when it could not be reached)."""

    topic: str
    total: int
    server_asked: bool
    rows: list[OpView] | list[FileView]
    server_note: str = ""


@dataclass(frozen=True, slots=True)
class Filters:
    """What to list: a period of `recorded_at`, a state, a customer, a ticket number; and
    which page: `limit` rows from the `offset`-th on (newest first)."""

    period: Period = ALL_DATES
    state: str | None = None
    customer: str | None = None
    number: int | None = None
    limit: int | None = None
    offset: int = 0

    def check(self, topic: str) -> None:
        if self.state is not None and self.state not in VIEW_STATES:
            raise ConfigError(f"unknown state {self.state!r}; expected one of {VIEW_STATES}")
        if self.customer is not None and topic != SALES:
            raise ConfigError(f"--customer applies to {SALES}, not {topic}")
        if self.number is not None and topic not in NUMBERED:
            raise ConfigError(f"--number applies to {SALES} and {Z_CLOSES}, not {topic}")

    @property
    def by_body(self) -> bool:
        return self.customer is not None or self.number is not None


def list_operations(
    engine: Engine,
    topic: str,
    filters: Filters = Filters(),
    *,
    server: ServerLookup | None = None,
) -> Listing:
    """The till's operations of `topic` (slug or alias), newest first, one row per
    operation (per file for weekly files), with the total matching `filters`; `server`
    fills what the server holds (not asked when None or when the broker is away)."""
    slug = up_topic(topic)
    filters.check(slug)
    with terminal_connection(engine, f"listing {slug}", write=False) as connection:
        if slug == WEEKLY_FILES:
            total, files = _files(connection, filters)
            return _with_server_files(
                Listing(topic=slug, total=total, server_asked=False, rows=files), server
            )
        if filters.by_body:
            total, ops = _ops_by_body(connection, slug, filters)
        else:
            total, ops = _ops_page(connection, slug, filters)
    return _with_server_ops(Listing(topic=slug, total=total, server_asked=False, rows=ops), server)


def with_server(listing: Listing, server: ServerLookup | None) -> Listing:
    """`listing` (one listed without a server) with what the server holds of its rows
    filled in, as `list_operations(..., server=server)` would have: a view shows the
    till's rows first and the server's column when it answers."""
    if listing.topic == WEEKLY_FILES:
        return _with_server_files(listing, server)
    return _with_server_ops(listing, server)


def count_operations(engine: Engine, topic: str, filters: Filters = Filters()) -> int:
    """How many operations (files, for weekly files) `list_operations` would list in all."""
    return list_operations(
        engine, topic, Filters(filters.period, filters.state, filters.customer, filters.number, 1)
    ).total


# -- operations (not weekly files) ---------------------------------------------------------

_later = outbox.alias("later")
_purged_later = purged.alias("purged_later")


def _latest_rows(slug: str, period: Period, *, body: bool) -> sa.Select[Any]:
    """The latest version of every operation of `slug` still in the outbox."""
    query = sa.select(
        outbox.c.seq,
        outbox.c.op_id,
        outbox.c.version,
        outbox.c.state,
        outbox.c.attempts,
        outbox.c.last_error,
        outbox.c.recorded_at,
        *((outbox.c.body,) if body else ()),
    ).where(
        outbox.c.topic == slug,
        ~sa.exists().where(_later.c.op_id == outbox.c.op_id, _later.c.version > outbox.c.version),
        ~sa.exists().where(purged.c.op_id == outbox.c.op_id, purged.c.version > outbox.c.version),
    )
    return _in_period(query, outbox.c.recorded_at, period)


def _purged_rows(slug: str, period: Period) -> sa.Select[Any]:
    """Operations of `slug` known only from the purge log, at their latest version."""
    query = sa.select(
        purged.c.seq,
        purged.c.op_id,
        purged.c.version,
        sa.literal(PURGED).label("state"),
        sa.null().label("attempts"),
        sa.null().label("last_error"),
        purged.c.recorded_at,
    ).where(
        purged.c.topic == slug,
        ~sa.exists().where(outbox.c.op_id == purged.c.op_id, outbox.c.version >= purged.c.version),
        ~sa.exists().where(
            _purged_later.c.op_id == purged.c.op_id, _purged_later.c.version > purged.c.version
        ),
    )
    return _in_period(query, purged.c.recorded_at, period)


def _in_period(query: sa.Select[Any], column: Any, period: Period) -> sa.Select[Any]:
    return query.where(*_period_terms(column, period))


def _candidates(slug: str, filters: Filters) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """Every operation of `slug` (latest version) matching the period and state."""
    parts: list[sa.Select[Any]] = []
    if filters.state != PURGED:
        latest = _latest_rows(slug, filters.period, body=False)
        if filters.state is not None:
            latest = latest.where(outbox.c.state == filters.state)
        parts.append(latest)
    if filters.state in (None, PURGED):
        parts.append(_purged_rows(slug, filters.period))
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


def _ops_page(connection: sa.Connection, slug: str, filters: Filters) -> tuple[int, list[OpView]]:
    page = _candidates(slug, filters).order_by(sa.desc("seq"))
    if filters.limit is not None:
        page = page.limit(filters.limit)
    if filters.offset:
        page = page.offset(filters.offset)
    rows = connection.execute(page).all()
    bodies = _bodies(connection, [r.seq for r in rows if r.state != PURGED])
    total = _count(connection, slug, filters)
    return total, [_op_view(slug, row, bodies.get(row.seq)) for row in rows]


def _count(connection: sa.Connection, slug: str, filters: Filters) -> int:
    """How many operations `_candidates` holds, without a lookup per row: the rows that
    match, less those a later version supersedes. A later version is a row of version 2 or
    more (in the outbox or the purge log): few, so the superseded are found from them."""
    later = sa.union_all(
        sa.select(outbox.c.op_id, outbox.c.version).where(outbox.c.version > 1),
        sa.select(purged.c.op_id, purged.c.version).where(purged.c.version > 1),
    ).subquery("later")
    total = 0
    tables = [(outbox, filters.state)] if filters.state != PURGED else []
    if filters.state in (None, PURGED):
        tables.append((purged, None))
    for table, state in tables:
        where = [table.c.topic == slug, *_period_terms(table.c.recorded_at, filters.period)]
        if state is not None:
            where.append(table.c.state == state)
        rows = sa.select(sa.func.count()).select_from(table).where(*where)
        superseded = (
            sa.select(sa.func.count(sa.distinct(table.c.seq)))
            .select_from(
                later.join(
                    table,
                    sa.and_(table.c.op_id == later.c.op_id, table.c.version < later.c.version),
                )
            )
            .where(*where)
        )
        total += connection.execute(rows).scalar_one() - connection.execute(superseded).scalar_one()
    return int(total)


def _period_terms(column: Any, period: Period) -> list[Any]:
    since, until = period.utc()
    return [
        *(() if since is None else (column >= since,)),
        *(() if until is None else (column < until,)),
    ]


def _ops_by_body(
    connection: sa.Connection, slug: str, filters: Filters
) -> tuple[int, list[OpView]]:
    """Customer and number live in the body: read every candidate's summary."""
    if filters.state == PURGED:
        return 0, []  # a purged operation has no body to match
    query = _latest_rows(slug, filters.period, body=True).order_by(outbox.c.seq.desc())
    if filters.state is not None:
        query = query.where(outbox.c.state == filters.state)
    found: list[OpView] = []
    total = 0
    for row in connection.execute(query):
        summary = summary_or_reason(row.body)
        if not matches(summary, customer=filters.customer, number=filters.number):
            continue
        total += 1
        if total > filters.offset and (filters.limit is None or len(found) < filters.limit):
            found.append(_op_view(slug, row, row.body))
    return total, found


def _bodies(connection: sa.Connection, seqs: Sequence[int]) -> dict[int, bytes]:
    if not seqs:
        return {}
    query = sa.select(outbox.c.seq, outbox.c.body).where(outbox.c.seq.in_(seqs))
    return {seq: body for seq, body in connection.execute(query)}


def _op_view(slug: str, row: Any, body: bytes | None) -> OpView:
    return OpView(
        topic=slug,
        op_id=row.op_id,
        seq=row.seq,
        version=row.version,
        state=row.state,
        recorded_at=utc(row.recorded_at),
        attempts=row.attempts,
        last_error=row.last_error,
        details={} if body is None else columns(summary_or_reason(body)),
    )


# -- weekly files --------------------------------------------------------------------------


@dataclass(slots=True)
class _FileParts:
    summary: ChunkSummary
    states: set[str]
    op_ids: list[str]
    indexes: set[int]
    recorded_at: dt.datetime
    seq: int


def _files(connection: sa.Connection, filters: Filters) -> tuple[int, list[FileView]]:
    """Every weekly file (from its chunks' summaries) and every purge of chunks, newest
    first, filtered by the file's state."""
    files = [_file_view(parts) for parts in _file_parts(connection, filters.period)]
    files += _purged_files(connection, filters.period)
    if filters.state is not None:
        files = [f for f in files if f.state == filters.state]
    files.sort(key=lambda f: f.seq, reverse=True)
    end = len(files) if filters.limit is None else filters.offset + filters.limit
    return len(files), files[filters.offset : end]


def _file_parts(connection: sa.Connection, period: Period) -> Iterable[_FileParts]:
    groups: dict[tuple[str, str, str], _FileParts] = {}
    query = _latest_rows(WEEKLY_FILES, period, body=True).order_by(outbox.c.seq)
    for row in connection.execute(query):
        chunk = summary_or_reason(row.body)
        if not isinstance(chunk, ChunkSummary):
            # a chunk replaced by another kind of operation is no longer a chunk; one that
            # does not decode belongs to no file it can name (`pending list` shows it)
            continue
        key = (chunk.week, chunk.file_name, chunk.sha256)
        parts = groups.get(key)
        if parts is None:
            parts = groups[key] = _FileParts(chunk, set(), [], set(), utc(row.recorded_at), 0)
        parts.states.add(row.state)
        parts.op_ids.append(row.op_id)
        parts.indexes.add(chunk.chunk_index)
        parts.seq = row.seq
    return groups.values()


def _file_view(parts: _FileParts) -> FileView:
    chunk = parts.summary
    return FileView(
        topic=WEEKLY_FILES,
        file_name=chunk.file_name,
        week=chunk.week,
        size=chunk.size,
        sha256=chunk.sha256,
        chunks_held=len(parts.indexes),
        chunk_count=chunk.chunk_count,
        state=worst(parts.states),
        recorded_at=parts.recorded_at,
        op_ids=parts.op_ids,
        seq=parts.seq,
    )


def _purged_files(connection: sa.Connection, period: Period) -> list[FileView]:
    """Purged chunks have no body, hence no file name: one row per purge."""
    query = _in_period(
        sa.select(
            purged.c.purge_id,
            sa.func.count(),
            sa.func.min(purged.c.recorded_at),
            sa.func.max(purged.c.seq),
        )
        .where(purged.c.topic == WEEKLY_FILES)
        .where(~sa.exists().where(outbox.c.op_id == purged.c.op_id))
        .group_by(purged.c.purge_id),
        purged.c.recorded_at,
        period,
    )
    return [
        FileView(
            topic=WEEKLY_FILES,
            file_name=None,
            week=None,
            size=None,
            sha256=None,
            chunks_held=int(count),
            chunk_count=None,
            state=PURGED,
            recorded_at=utc(first),
            op_ids=[],
            seq=int(last_seq),
        )
        for _purge, count, first, last_seq in connection.execute(query)
    ]


def worst(states: Iterable[str]) -> str:
    """The state a file shows for its chunks' states: the first of WORST_FIRST among them."""
    held = set(states)
    return next((state for state in WORST_FIRST if state in held), PURGED)


# -- the server's side ----------------------------------------------------------------------


def _asked(
    server: ServerLookup | None, op_ids: list[str]
) -> tuple[dict[str, ServerHeld] | None, str]:
    """The server's answer, or None and why it was not asked."""
    if server is None:
        return None, "not asked"
    if not op_ids:
        return {}, ""
    try:
        return server(op_ids), ""
    except (BrokerUnavailable, NoAnswer) as exc:
        return None, f"not asked: {exc}"


def _with_server_ops(listing: Listing, server: ServerLookup | None) -> Listing:
    rows = [row for row in listing.rows if isinstance(row, OpView)]
    held, note = _asked(server, [row.op_id for row in rows])
    if held is None:
        listing.server_note = note
        return listing
    for row in rows:
        row.server = held.get(row.op_id)
    listing.server_asked = True
    return listing


def _with_server_files(listing: Listing, server: ServerLookup | None) -> Listing:
    files = [row for row in listing.rows if isinstance(row, FileView)]
    held, note = _asked(server, [op_id for row in files for op_id in row.op_ids])
    if held is None:
        listing.server_note = note
        return listing
    for row in files:
        answers = [held[op_id] for op_id in row.op_ids if op_id in held]
        row.server_chunks = sum(1 for answer in answers if answer.status != REJECTED)
        row.server_received_at = max((a.received_at for a in answers), default=None)
    listing.server_asked = True
    return listing


def utc(moment: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive; every timestamp cajasync stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
