"""Compaction of the change log: drop the changes every till has passed.

    report = compact(engine, Retention(), dry_run=True)

The change log (`catalog_changes`) is what the feed relay publishes and what a catch-up
replays; nothing else needs it, and it grows by every change ever made. Per stream,
compaction keeps only the changes above its *floor*, the lowest of:

* the position of every till that reported a status (schemas/status.py: the positions of
  the streams it holds) within `hold_s`, registered or not, unless the registry says it is
  revoked: what such a till may still ask for stays (the status is up to a minute old,
  and a till's positions only rise, so what it reported is never above what it needs);
* `head - keep_changes`: the latest changes of every stream stay whatever the statuses;
* the seq before the oldest change younger than `keep_s`: a till that sends no status
  (an older version, `CAJASYNC_STATUS_INTERVAL_S=0`, an unregistered till served under
  --allow-shared-user that has not reported yet) still catches up after an outage that
  short;
* the seq before the first change not published yet (the feed relay still needs it).

A floor never goes down. It is written to `catalog_streams.compacted_to` before the
changes go (in batches of `batch`, each its own transaction), so a catch-up read in one
snapshot always sees either the changes or the floor. Nothing is ever lost by compacting
too much: a catch-up from at or below the floor is answered with a refresh of the stream
(the current records changed since the position, from `catalog_records`, which keeps
every key's latest version and tombstone: inbox/answers.py), and the till's positions
then jump to the head. Compaction only trades log rows for that refresh.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.server_tables import (
    REVOKED,
    change_log,
    stream_heads,
    terminal_status,
    terminals,
)
from cajasync.core.settings import Settings
from schemas.status import TerminalStatus

log = logging.getLogger(__name__)

DAY_S = 86_400.0
BATCH = 20_000  # changes deleted per transaction

_status_decoder = msgspec.msgpack.Decoder(TerminalStatus)


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of the change log compaction keeps beyond what the tills hold (see module).

    `keep_changes`: the latest changes of each stream; `keep_s`: changes younger than
    this; `hold_s`: a till's reported positions hold the log this long after its status
    was received (a till silent for longer gets a refresh when it comes back).
    """

    keep_changes: int = 1000
    keep_s: float = 7 * DAY_S
    hold_s: float = 35 * DAY_S


@dataclass(frozen=True, slots=True)
class StreamFloor:
    """One stream's compaction: its head, the floor before and after, the changes dropped,
    and what set the floor (a till, `keep_changes`, `keep_s`, `unpublished`)."""

    stream: str
    head: int
    before: int
    floor: int
    dropped: int
    held_by: str


@dataclass(slots=True)
class CompactionReport:
    """What a compaction did (or, with `dry_run`, would do)."""

    dry_run: bool
    streams: list[StreamFloor] = field(default_factory=list)
    rows_before: int = 0
    rows_after: int = 0
    seconds: float = 0.0

    @property
    def dropped(self) -> int:
        return sum(stream.dropped for stream in self.streams)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
            "dropped": self.dropped,
            "seconds": round(self.seconds, 3),
            "streams": [asdict(stream) for stream in self.streams],
        }


def compact(
    engine: Engine,
    retention: Retention | None = None,
    *,
    dry_run: bool = False,
    now: float | None = None,
    batch: int = BATCH,
) -> CompactionReport:
    """Compact every stream's change log to its floor (module docstring); with `dry_run`,
    only say what would go."""
    retention = retention or Retention()
    started = time.monotonic()
    with engine.connect() as connection:
        floors = plan(connection, retention, time.time() if now is None else now)
        rows_before = log_rows(connection)
    report = CompactionReport(dry_run, floors, rows_before, rows_before)
    if not dry_run:
        for floor in floors:
            if floor.floor > floor.before:
                _drop(engine, floor, batch)
        with engine.connect() as connection:
            report.rows_after = log_rows(connection)
    else:
        report.rows_after = rows_before - report.dropped
    report.seconds = time.monotonic() - started
    if not dry_run and report.dropped:
        log.info(
            "change log compacted: %d change(s) dropped in %d stream(s), %d left",
            report.dropped,
            sum(1 for s in floors if s.dropped),
            report.rows_after,
        )
    return report


def plan(connection: sa.Connection, retention: Retention, now: float) -> list[StreamFloor]:
    """Every stream's floor (never below the one it has) and the changes it would drop."""
    heads = {
        row.stream: (row.seq, row.compacted_to)
        for row in connection.execute(
            sa.select(stream_heads.c.stream, stream_heads.c.seq, stream_heads.c.compacted_to)
        )
    }
    held = till_positions(connection, now - retention.hold_s)
    young = _first_seqs(connection, change_log.c.created_at >= now - retention.keep_s)
    unpublished = _first_seqs(connection, change_log.c.published_at.is_(None))
    floors: list[StreamFloor] = []
    for stream, (head, before) in sorted(heads.items()):
        limits = [(head - retention.keep_changes, "keep_changes")]
        if stream in young:
            limits.append((young[stream] - 1, "keep_s"))
        if stream in unpublished:
            limits.append((unpublished[stream] - 1, "unpublished"))
        if stream in held:
            position, terminal = held[stream]
            limits.append((position, f"terminal {terminal}"))
        floor, held_by = min(limits)
        floor = min(max(floor, before, 0), head)
        dropped = _count(connection, stream, before, floor) if floor > before else 0
        floors.append(StreamFloor(stream, head, before, floor, dropped, held_by))
    return floors


def till_positions(connection: sa.Connection, since: float) -> dict[str, tuple[int, str]]:
    """Per stream, the lowest position reported by a till heard from since `since` (epoch
    seconds) that the registry does not list as revoked, and which till that is."""
    revoked = set(
        connection.execute(
            sa.select(terminals.c.terminal).where(terminals.c.status == REVOKED)
        ).scalars()
    )
    cutoff = dt.datetime.fromtimestamp(since, dt.UTC)
    rows = connection.execute(
        sa.select(terminal_status.c.terminal, terminal_status.c.body).where(
            terminal_status.c.received_at >= cutoff
        )
    )
    lowest: dict[str, tuple[int, str]] = {}
    for row in rows:
        if row.terminal in revoked:
            continue
        try:
            status = _status_decoder.decode(row.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # inbox/status.py stored it; one it cannot read holds nothing
        for stream, position in status.streams.items():
            if stream not in lowest or position < lowest[stream][0]:
                lowest[stream] = (position, row.terminal)
    return lowest


def log_rows(connection: sa.Connection) -> int:
    """Changes in the change log, every stream."""
    return int(connection.execute(sa.select(sa.func.count()).select_from(change_log)).scalar_one())


def log_bytes(connection: sa.Connection) -> int:
    """Bytes of the encoded changes in the log (the table's own size depends on the
    database: PostgreSQL reuses a deleted row's space but does not give it back)."""
    total = connection.execute(sa.select(sa.func.sum(sa.func.length(change_log.c.body))))
    return int(total.scalar_one() or 0)


def _first_seqs(connection: sa.Connection, where: sa.ColumnElement[bool]) -> dict[str, int]:
    query = sa.select(change_log.c.stream, sa.func.min(change_log.c.seq)).where(where)
    return {stream: seq for stream, seq in connection.execute(query.group_by(change_log.c.stream))}


def _count(connection: sa.Connection, stream: str, after: int, upto: int) -> int:
    query = sa.select(sa.func.count()).where(
        change_log.c.stream == stream, change_log.c.seq > after, change_log.c.seq <= upto
    )
    return int(connection.execute(query).scalar_one())


def _drop(engine: Engine, floor: StreamFloor, batch: int) -> None:
    """Raise the stream's floor, then delete its changes up to it, `batch` seqs at a time."""
    with engine.begin() as connection:
        connection.execute(
            stream_heads.update()
            .where(stream_heads.c.stream == floor.stream, stream_heads.c.compacted_to < floor.floor)
            .values(compacted_to=floor.floor)
        )
    low = floor.before
    while low < floor.floor:
        high = min(low + batch, floor.floor)
        with engine.begin() as connection:
            connection.execute(
                change_log.delete().where(
                    change_log.c.stream == floor.stream,
                    change_log.c.seq > low,
                    change_log.c.seq <= high,
                )
            )
        low = high


def retention_of(settings: Settings) -> Retention:
    """The retention `server run` and `server compact` use (CAJASYNC_CHANGELOG_*)."""
    return Retention(
        keep_changes=settings.changelog_keep,
        keep_s=settings.changelog_keep_s,
        hold_s=settings.changelog_hold_s,
    )


def run_compaction(
    engine: Engine, settings: Settings, *, stop: threading.Event, finished: threading.Event
) -> int:
    """Compact every `settings.compact_interval_s` (the first time one interval after the
    start) until `stop` or `finished` is set; how many changes were dropped in all. A
    database away or a failed compaction is logged and tried again next time: compaction
    is never urgent, and several server processes compacting at once only repeat work."""
    dropped = 0
    interval = settings.compact_interval_s
    next_at = time.monotonic() + interval
    while not (stop.is_set() or finished.is_set()):
        finished.wait(min(1.0, max(0.0, next_at - time.monotonic())))
        if stop.is_set() or finished.is_set() or time.monotonic() < next_at:
            continue
        next_at = time.monotonic() + interval
        try:
            dropped += compact(engine, retention_of(settings)).dropped
        except sa.exc.SQLAlchemyError as exc:
            log.warning("change log compaction failed, trying again in %.0f s: %s", interval, exc)
    return dropped
