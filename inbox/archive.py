"""Moving operations of past months out of `server_operations` (`cajasync server archive`).

    report = archive(engine, before=dt.date(2026, 1, 1), dry_run=True)

`server_operations` holds every operation's current version and grows by every sale of
every till. An archive moves those recorded before a month into
`server_operations_archive` (same columns, plus when), one month per transaction, so the
live table, its indexes and every query on it (Z checks, `server ventas`, counts) stay the
size of the months kept.

Why an archive table and not PostgreSQL's declarative partitioning by month: a partitioned
table's unique keys must include the partition key, and ingest upserts an operation by
`op_id` alone (`ON CONFLICT (op_id)`: a void is version 2 of the same op), which needs a
unique index on `op_id` that a table partitioned by `recorded_at` cannot have; making
the key (op_id, recorded_at) would let a corrected version with another recording time
become a second row. Partitioning would also rewrite the whole table in one migration and
would not exist on SQLite. The archive works the same on SQLite.

Dedup stays exact: the tracking rows (`inbox_received`, one per op id and version, no
payload) are not moved, so a late duplicate of an archived operation is recognised and
acknowledged as before; a *newer* version arriving later is applied to the live table (the
archive keeps the older copy). Kept live whatever their month: the chunks of a weekly file
not complete yet (reassembly reads them) and the operations of a till with a Z close still
waiting for sales of a period starting before the month ends (its check reads them).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.server_tables import (
    COMPLETE,
    Z_WAITING,
    operations,
    operations_archive,
    weekly_chunks,
    weekly_files,
    z_closes,
)
from cajasync.errors import ConfigError

_MONTH = re.compile(r"^(\d{4})-(\d{2})\Z")
_COLUMNS = [column.name for column in operations.columns]


@dataclass(slots=True)
class ArchiveReport:
    """Operations moved (or, with `dry_run`, that would move) per month `YYYY-MM`."""

    before: str
    dry_run: bool
    months: dict[str, int] = field(default_factory=dict)
    kept: int = 0  # of those months, kept live (weekly file incomplete, Z waiting)
    seconds: float = 0.0

    @property
    def moved(self) -> int:
        return sum(self.months.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "dry_run": self.dry_run,
            "moved": self.moved,
            "kept": self.kept,
            "months": self.months,
            "seconds": round(self.seconds, 3),
        }


def month_start(text: str, *, today: dt.date | None = None) -> dt.date:
    """The first day of month `YYYY-MM`; ConfigError unless it is a month already over
    (the current month is still being written)."""
    found = _MONTH.match(text)
    if found is None or not 1 <= int(found[2]) <= 12:
        raise ConfigError(f"--before {text!r}: give a month as YYYY-MM, e.g. 2026-01")
    start = dt.date(int(found[1]), int(found[2]), 1)
    this_month = (today or dt.datetime.now(dt.UTC).date()).replace(day=1)
    if start > this_month:
        raise ConfigError(
            f"--before {text}: only months already over can be archived "
            f"(at most {this_month:%Y-%m}, which archives up to the end of last month)"
        )
    return start


def archive(
    engine: Engine, before: dt.date, *, dry_run: bool = False, now: dt.datetime | None = None
) -> ArchiveReport:
    """Move the operations recorded before `before` (a month's first day) to the archive,
    a month per transaction, oldest first; with `dry_run`, count them only."""
    started = time.monotonic()
    report = ArchiveReport(f"{before:%Y-%m}", dry_run)
    end = _utc(before)
    with engine.connect() as connection:
        oldest = connection.execute(
            sa.select(sa.func.min(operations.c.recorded_at)).where(operations.c.recorded_at < end)
        ).scalar()
    if oldest is None:
        return report
    month = _utc(_as_utc(oldest).date().replace(day=1))
    while month < end:
        following = _next_month(month)
        with engine.begin() as connection:
            moved, kept = _month(connection, month, following, dry_run, now)
        if moved:
            report.months[f"{month:%Y-%m}"] = moved
        report.kept += kept
        month = following
    report.seconds = time.monotonic() - started
    return report


def _month(
    connection: sa.Connection,
    start: dt.datetime,
    end: dt.datetime,
    dry_run: bool,
    now: dt.datetime | None,
) -> tuple[int, int]:
    """Move one month's operations (those that may go); (moved, kept live)."""
    in_month = sa.and_(operations.c.recorded_at >= start, operations.c.recorded_at < end)
    movable = sa.and_(in_month, *_stays_live(end))
    count = sa.select(sa.func.count()).select_from(operations)
    total = int(connection.execute(count.where(in_month)).scalar_one())
    moving = int(connection.execute(count.where(movable)).scalar_one())
    if dry_run or not moving:
        return moving, total - moving
    archived_at = now or dt.datetime.now(dt.UTC)
    columns = [operations.c[name] for name in _COLUMNS]
    select = sa.select(*columns, sa.literal(archived_at, sa.DateTime(timezone=True))).where(movable)
    connection.execute(operations_archive.insert().from_select([*_COLUMNS, "archived_at"], select))
    connection.execute(operations.delete().where(movable))
    return moving, total - moving


def _stays_live(end: dt.datetime) -> list[sa.ColumnElement[bool]]:
    """What must not move: chunks of a file not complete, and the operations of a till
    with a Z close waiting for sales of a period that starts before `end`."""
    incomplete = (
        sa.select(weekly_chunks.c.op_id)
        .join(
            weekly_files,
            sa.and_(
                weekly_files.c.terminal == weekly_chunks.c.terminal,
                weekly_files.c.week == weekly_chunks.c.week,
                weekly_files.c.file_name == weekly_chunks.c.file_name,
                weekly_files.c.sha256 == weekly_chunks.c.sha256,
            ),
        )
        .where(weekly_files.c.status != COMPLETE)
    )
    waiting = sa.select(z_closes.c.terminal).where(
        z_closes.c.state == Z_WAITING, z_closes.c.period_start < end
    )
    return [operations.c.op_id.not_in(incomplete), operations.c.terminal.not_in(waiting)]


def _utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _as_utc(moment: dt.datetime) -> dt.datetime:
    """SQLite gives naive datetimes back (stored UTC)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _next_month(month: dt.datetime) -> dt.datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
