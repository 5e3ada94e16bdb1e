"""What the server holds of the tills' operations, as a technician reads it.

One row per operation: its terminal, seq, the latest version received, its status there
(applied, stale, rejected with the reason), when it arrived, when its till recorded it and
its business columns (schemas/summaries.py, from the stored payload of the version the
server applied). A weekly file is one row per file (server_weekly_files: name, week, size,
sha256, chunks held of the total, partial / complete / corrupt), never its chunks.

`held` answers a till's question "what do you hold of these op ids?" for its view.

    listing = list_server_operations(engine, "ventas", ServerFilters(terminal="T001"))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.periods import Period
from cajasync.core.server_tables import (
    APPLIED,
    COMPLETE,
    CORRUPT,
    PARTIAL,
    REJECTED,
    STALE,
    operations,
    received,
    weekly_chunks,
    weekly_files,
)
from cajasync.core.store_faults import server_transaction
from cajasync.errors import ConfigError
from schemas.summaries import columns, matches, summary_of_json
from schemas.topics import SALES, WEEKLY_FILES, Z_CLOSES, up_topic

OP_STATUSES: Final = (APPLIED, STALE, REJECTED)
FILE_STATUSES: Final = (PARTIAL, COMPLETE, CORRUPT)
ALL_DATES: Final = Period()


class HeldOp(msgspec.Struct, frozen=True, kw_only=True):
    """The latest version of an operation the server received, its status and reason."""

    version: int
    received_at: dt.datetime
    status: str
    reason: str = ""


class ServerOpView(msgspec.Struct, frozen=True, kw_only=True):
    """One operation as the server holds it. `version` is the latest received, `status`
    that version's; `applied_version` the one whose columns are shown (None: none applied,
    e.g. every version rejected), `recorded_at` its till's (None then too)."""

    terminal: str
    topic: str
    op_id: str
    seq: int
    version: int
    status: str
    reason: str
    received_at: dt.datetime
    recorded_at: dt.datetime | None
    applied_version: int | None
    details: dict[str, Any]


class ServerFileView(msgspec.Struct, frozen=True, kw_only=True):
    """One weekly file as the server reassembles it."""

    terminal: str
    topic: str
    file_name: str
    week: str
    size: int
    sha256: str
    chunks_held: int
    chunk_count: int
    status: str
    reason: str
    recorded_at: dt.datetime | None  # its first chunk's
    received_at: dt.datetime  # when the file last changed


class ServerListing(msgspec.Struct, frozen=True, kw_only=True):
    """A page of one topic and how many match in all."""

    topic: str
    total: int
    rows: list[ServerOpView] | list[ServerFileView]


@dataclass(frozen=True, slots=True)
class ServerFilters:
    """Which operations: a terminal, a period of `recorded_at`, a status, a customer, a
    ticket (or Z) number, and how many to show."""

    terminal: str | None = None
    period: Period = ALL_DATES
    status: str | None = None
    customer: str | None = None
    number: int | None = None
    limit: int | None = None

    def check(self, topic: str) -> None:
        statuses = FILE_STATUSES if topic == WEEKLY_FILES else OP_STATUSES
        if self.status is not None and self.status not in statuses:
            raise ConfigError(f"unknown state {self.status!r} for {topic}; expected {statuses}")
        if self.customer is not None and topic != SALES:
            raise ConfigError(f"--customer applies to {SALES}, not {topic}")
        if self.number is not None and topic not in (SALES, Z_CLOSES):
            raise ConfigError(f"--number applies to {SALES} and {Z_CLOSES}, not {topic}")


def list_server_operations(
    engine: Engine, topic: str, filters: ServerFilters = ServerFilters()
) -> ServerListing:
    """The operations of `topic` (slug or alias) the server holds, newest first (by when
    their till recorded them), one row per operation or per weekly file."""
    slug = up_topic(topic)
    filters.check(slug)
    with server_transaction(engine, "server store", f"listing {slug}") as connection:
        if slug == WEEKLY_FILES:
            total, files = _files(connection, filters)
            return ServerListing(topic=slug, total=total, rows=files)
        if filters.customer is not None or filters.number is not None:
            total, ops = _ops_by_payload(connection, slug, filters)
        else:
            total, ops = _ops_page(connection, slug, filters)
    return ServerListing(topic=slug, total=total, rows=ops)


def held(engine: Engine, op_ids: Sequence[str]) -> dict[str, HeldOp]:
    """What the server holds of these operations: the latest version received of each it
    knows (the answer to a till's `ServerLookup`)."""
    if not op_ids:
        return {}
    query = (
        sa.select(received.c.op_id, received.c.version, received.c.received_at)
        .add_columns(received.c.status, received.c.reason)
        .where(received.c.op_id.in_(list(op_ids)), _latest())
    )
    with server_transaction(engine, "server store", "reading operations held") as connection:
        return {
            op_id: HeldOp(version=v, received_at=_utc(at), status=status, reason=reason)
            for op_id, v, at, status, reason in connection.execute(query)
        }


def weekly_counts(engine: Engine) -> dict[str, tuple[int, int]]:
    """Per terminal: weekly files and the chunks they were sent in (current versions)."""
    files = sa.select(weekly_files.c.terminal, sa.func.count()).group_by(weekly_files.c.terminal)
    chunks = sa.select(weekly_chunks.c.terminal, sa.func.count()).group_by(weekly_chunks.c.terminal)
    with server_transaction(engine, "server store", "counting weekly files") as connection:
        by_files = {terminal: int(n) for terminal, n in connection.execute(files)}
        by_chunks = {terminal: int(n) for terminal, n in connection.execute(chunks)}
    return {t: (by_files.get(t, 0), by_chunks.get(t, 0)) for t in by_files.keys() | by_chunks}


# -- operations ----------------------------------------------------------------------------

_later = received.alias("later")
_COLUMNS = (
    received.c.terminal,
    received.c.topic,
    received.c.op_id,
    received.c.seq,
    received.c.version,
    received.c.status,
    received.c.reason,
    received.c.received_at,
    operations.c.recorded_at,
    operations.c.version.label("applied_version"),
)


def _latest() -> Any:
    newer = sa.exists().where(
        _later.c.op_id == received.c.op_id, _later.c.version > received.c.version
    )
    return ~newer


def _matching(slug: str, filters: ServerFilters) -> list[Any]:
    where = [received.c.topic == slug, _latest()]
    if filters.terminal is not None:
        where.append(received.c.terminal == filters.terminal)
    if filters.status is not None:
        where.append(received.c.status == filters.status)
    since, until = filters.period.utc()
    if since is not None:
        where.append(operations.c.recorded_at >= since)
    if until is not None:
        where.append(operations.c.recorded_at < until)
    return where


def _joined() -> Any:
    return received.outerjoin(operations, operations.c.op_id == received.c.op_id)


def _newest_first() -> list[Any]:
    when = sa.func.coalesce(operations.c.recorded_at, received.c.received_at)
    return [when.desc(), received.c.terminal, received.c.seq.desc()]


def _ops_page(
    connection: sa.Connection, slug: str, filters: ServerFilters
) -> tuple[int, list[ServerOpView]]:
    where = _matching(slug, filters)
    total = connection.execute(
        sa.select(sa.func.count()).select_from(_joined()).where(*where)
    ).scalar_one()
    page = sa.select(*_COLUMNS).select_from(_joined()).where(*where).order_by(*_newest_first())
    if filters.limit is not None:
        page = page.limit(filters.limit)
    rows = connection.execute(page).all()
    payloads = _payloads(connection, [row.op_id for row in rows if row.applied_version])
    return int(total), [_op_view(row, payloads.get(row.op_id)) for row in rows]


def _ops_by_payload(
    connection: sa.Connection, slug: str, filters: ServerFilters
) -> tuple[int, list[ServerOpView]]:
    """Customer and number live in the payload: read every candidate's summary."""
    query = (
        sa.select(*_COLUMNS, operations.c.payload)
        .select_from(_joined())
        .where(*_matching(slug, filters), operations.c.payload.is_not(None))
        .order_by(*_newest_first())
    )
    found: list[ServerOpView] = []
    total = 0
    for row in connection.execute(query):
        if not matches(
            summary_of_json(row.payload), customer=filters.customer, number=filters.number
        ):
            continue
        total += 1
        if filters.limit is None or len(found) < filters.limit:
            found.append(_op_view(row, row.payload))
    return total, found


def _payloads(connection: sa.Connection, op_ids: list[str]) -> dict[str, str]:
    if not op_ids:
        return {}
    query = sa.select(operations.c.op_id, operations.c.payload).where(
        operations.c.op_id.in_(op_ids)
    )
    return {op_id: payload for op_id, payload in connection.execute(query)}


def _op_view(row: Any, payload: str | None) -> ServerOpView:
    return ServerOpView(
        terminal=row.terminal,
        topic=row.topic,
        op_id=row.op_id,
        seq=row.seq,
        version=row.version,
        status=row.status,
        reason=row.reason,
        received_at=_utc(row.received_at),
        recorded_at=None if row.recorded_at is None else _utc(row.recorded_at),
        applied_version=row.applied_version,
        details={} if payload is None else columns(summary_of_json(payload)),
    )


# -- weekly files --------------------------------------------------------------------------

_FILE_KEY = ("terminal", "week", "file_name", "sha256")


def _files(connection: sa.Connection, filters: ServerFilters) -> tuple[int, list[ServerFileView]]:
    first_recorded = (
        sa.select(sa.func.min(operations.c.recorded_at))
        .select_from(weekly_chunks.join(operations, operations.c.op_id == weekly_chunks.c.op_id))
        .where(*(weekly_chunks.c[name] == weekly_files.c[name] for name in _FILE_KEY))
        .scalar_subquery()
        .label("recorded_at")
    )
    files = sa.select(
        *(c for c in weekly_files.c if c.name != "content"), first_recorded
    ).subquery()
    where = []
    if filters.terminal is not None:
        where.append(files.c.terminal == filters.terminal)
    if filters.status is not None:
        where.append(files.c.status == filters.status)
    since, until = filters.period.utc()
    if since is not None:
        where.append(files.c.recorded_at >= since)
    if until is not None:
        where.append(files.c.recorded_at < until)
    total = connection.execute(sa.select(sa.func.count()).select_from(files).where(*where))
    page = (
        sa.select(files)
        .where(*where)
        .order_by(files.c.updated_at.desc(), files.c.terminal, files.c.file_name)
    )
    if filters.limit is not None:
        page = page.limit(filters.limit)
    return int(total.scalar_one()), [_file_view(row) for row in connection.execute(page)]


def _file_view(row: Any) -> ServerFileView:
    return ServerFileView(
        terminal=row.terminal,
        topic=WEEKLY_FILES,
        file_name=row.file_name,
        week=row.week,
        size=row.size,
        sha256=row.sha256,
        chunks_held=row.chunks_held,
        chunk_count=row.chunk_count,
        status=row.status,
        reason=row.reason,
        recorded_at=None if row.recorded_at is None else _utc(row.recorded_at),
        received_at=_utc(row.updated_at),
    )


def _utc(moment: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive; every timestamp cajasync stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
