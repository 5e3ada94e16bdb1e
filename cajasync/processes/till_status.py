"""A till's own status: read from its database, and sent up while `terminal run` runs.

`read_status(engine)` is what `cajasync terminal status` shows and what the server gets
(schemas/status.py): outbox rows not acknowledged by state and the oldest one's
`recorded_at`, each down stream's position, the last pull, the cajasync version.
`StatusReporter` sends it from the relay's ticks: every `status_interval_s`, and when the
pending counts changed (looked at most every `CHECK_EVERY_S`, one small read that takes no
write lock), so the relay is never slowed by more than one small message.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.db import reading
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.store_faults import terminal_connection
from cajasync.core.terminal_tables import ACKED, outbox, pulls, streams
from cajasync.errors import StoreError
from schemas.status import TerminalStatus

log = logging.getLogger(__name__)

CHECK_EVERY_S: Final = 3.0  # pending counts are looked at (and a change reported) this often
RECENT_ROWS: Final = 200  # outbox rows `last_activity` looks at, newest first


def pending_counts(connection: sa.Connection) -> tuple[dict[str, int], dt.datetime | None]:
    """Outbox rows not acknowledged, by state, and the oldest one's `recorded_at`."""
    query = (
        sa.select(outbox.c.state, sa.func.count(), sa.func.min(outbox.c.recorded_at))
        .where(outbox.c.state != ACKED)
        .group_by(outbox.c.state)
    )
    counts: dict[str, int] = {}
    oldest: dt.datetime | None = None
    for state, count, first in connection.execute(query):
        counts[state] = count
        if first is not None:
            first = _utc(first)
            oldest = first if oldest is None else min(oldest, first)
    return counts, oldest


def last_activity(connection: sa.Connection, recent: int = RECENT_ROWS) -> dt.datetime | None:
    """When the till's relay last did something this database shows: a broker confirm or a
    server receipt on one of its `recent` newest outbox rows, or a change applied to a down
    stream (snapshots, live changes). None when it never did. Cheap: the newest rows by
    seq and the small streams table, never a scan of the outbox."""
    newest = (
        sa.select(outbox.c.sent_at, outbox.c.settled_at)
        .order_by(outbox.c.seq.desc())
        .limit(recent)
        .subquery()
    )
    moments = [
        connection.execute(sa.select(sa.func.max(newest.c.sent_at))).scalar(),
        connection.execute(sa.select(sa.func.max(newest.c.settled_at))).scalar(),
        connection.execute(sa.select(sa.func.max(streams.c.updated_at))).scalar(),
    ]
    known = [float(moment) for moment in moments if moment is not None]
    return dt.datetime.fromtimestamp(max(known), dt.UTC) if known else None


def read_status(
    engine: Engine, identity: TerminalIdentity, *, now: dt.datetime | None = None
) -> TerminalStatus:
    """The till's status as its database holds it now."""
    from cajasync import __version__

    with terminal_connection(engine, "reading the terminal's status", write=False) as c:
        pending, oldest = pending_counts(c)
        positions = {row.stream: row.position for row in c.execute(sa.select(streams))}
        last_pull = c.execute(
            sa.select(pulls.c.status, pulls.c.started_at, pulls.c.finished_at)
            .order_by(pulls.c.started_at.desc())
            .limit(1)
        ).first()
    pull_at = None
    if last_pull is not None:
        pull_at = dt.datetime.fromtimestamp(last_pull.finished_at or last_pull.started_at, dt.UTC)
    return TerminalStatus(
        terminal=identity.terminal,
        sent_at=now or dt.datetime.now(dt.UTC),
        version=__version__,
        location=identity.location,
        pos=identity.pos,
        terminal_kind=identity.kind,
        pending=pending,
        oldest_pending=oldest,
        streams=positions,
        last_pull_at=pull_at,
        last_pull_status="" if last_pull is None else last_pull.status,
    )


class StatusReporter:
    """Decides, at each relay tick, whether to send the till's status, and sends it."""

    def __init__(
        self,
        engine: Engine,
        identity: TerminalIdentity,
        settings: Settings,
        send: Callable[[TerminalStatus], bool],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine, self._identity, self._send, self._clock = engine, identity, send, clock
        self._interval = settings.status_interval_s
        self._sent_at: float | None = None  # monotonic time of the last status sent
        self._checked_at: float | None = None
        self._sent_pending: dict[str, int] | None = None
        self.sent = 0
        self.pending: dict[str, int] = {}  # as last read (metrics read it)

    def tick(self) -> None:
        """Send a status when one is due: the first, one every interval, or a change."""
        if self._interval == 0:
            return
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < CHECK_EVERY_S:
            return
        self._checked_at = now
        try:
            with reading(self._engine) as connection:
                self.pending, _oldest = pending_counts(connection)
            due = self._sent_at is None or now - self._sent_at >= self._interval
            if not due and self.pending == self._sent_pending:
                return
            status = read_status(self._engine, self._identity)
        except (StoreError, sa.exc.SQLAlchemyError) as exc:  # a busy database: next time
            log.debug("terminal %s: status not read: %s", self._identity.terminal, exc)
            return
        if self._send(status):
            self._sent_at, self._sent_pending = now, dict(status.pending)
            self.sent += 1

    def reset(self) -> None:
        """A new session: send at its first tick (the server hears at once of a reconnect)."""
        self._sent_at = self._checked_at = None


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def till_status(engine: Engine) -> TerminalStatus:
    """The status of the till whose database `engine` opens (`cajasync terminal status`)."""
    from cajasync.core.identity import load_identity

    with terminal_connection(engine, "reading the terminal's identity", write=False) as c:
        identity = load_identity(c)
    return read_status(engine, identity)
