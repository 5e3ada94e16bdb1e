"""Herramientas: delete operations the server has acknowledged, and remember them.

    plan = plan_purge(engine, Period.before("2026-11-01", tz))   # what would go, per topic
    done = purge(engine, plan, grant.user, grant.role)           # it goes, and is logged

An operation goes only when the server acknowledged every version the outbox holds of it:
a pending, sent or rejected row is never removed, and neither is any other version of its
operation (a void still on its way keeps the sale it voids). With a bound, an operation
goes only when every version was recorded before it. So an operation is always wholly in
the outbox or wholly purged.

`purge` decides again inside its own transaction (rows may have changed state since the
plan was shown), keeps a slim row per removed outbox row in `cajasync_purged` (op_id,
version, seq, topic, recorded_at) and logs the purge in `cajasync_purges` (who, role,
when, the bound, and per topic how many rows recorded from when to when). Compare and diff
read `purged_counts` / `purged_keys` to count a purged operation as the till's.

Nothing else depends on the removed rows: seqs are taken from the terminal's counter
(`cajasync_terminal.last_seq`), never from the outbox, so the next operation continues
after the highest seq ever used.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.periods import Period
from cajasync.core.store_faults import terminal_connection
from cajasync.core.terminal_tables import ACKED, outbox, purged, purges
from cajasync.errors import ConfigError
from schemas.topics import up_topic

CHUNK: Final = 500  # rows per DELETE ... IN (...): well under SQLite's variable limit


class TopicSpan(msgspec.Struct, frozen=True, kw_only=True):
    """Outbox rows of one topic: how many, recorded from `first` to `last`."""

    topic: str
    rows: int
    first: dt.datetime
    last: dt.datetime


class PurgePlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a purge would remove now: acknowledged rows recorded before `before` (None: all)."""

    before: dt.datetime | None
    topics: list[TopicSpan]

    @property
    def rows(self) -> int:
        return sum(span.rows for span in self.topics)


class Purge(msgspec.Struct, frozen=True, kw_only=True):
    """One purge as logged: who, with which role, when, the bound and what went per topic."""

    id: int
    user: str
    role: str
    purged_at: dt.datetime
    before: dt.datetime | None
    topics: list[TopicSpan]

    @property
    def rows(self) -> int:
        return sum(span.rows for span in self.topics)


def plan_purge(engine: Engine, before: Period | dt.datetime | None = None) -> PurgePlan:
    """The acknowledged rows a purge would remove, per topic (see the module doc)."""
    bound = _bound(before)
    query = (
        sa.select(
            outbox.c.topic,
            sa.func.count(),
            sa.func.min(outbox.c.recorded_at),
            sa.func.max(outbox.c.recorded_at),
        )
        .where(_purgeable(bound))
        .group_by(outbox.c.topic)
        .order_by(outbox.c.topic)
    )
    with terminal_connection(engine, "planning a purge", write=False) as connection:
        spans = [
            TopicSpan(topic=topic, rows=int(count), first=_utc(first), last=_utc(last))
            for topic, count, first, last in connection.execute(query)
        ]
    return PurgePlan(before=bound, topics=spans)


def purge(
    engine: Engine, plan: PurgePlan, user: str, role: str, *, now: dt.datetime | None = None
) -> Purge:
    """Remove what `plan` describes as it stands now, in one transaction, and log it.

    The rows are chosen again inside the transaction with the plan's bound: a row that
    stopped being acknowledged since the plan (replayed, a new version recorded) stays.
    """
    purged_at = now or dt.datetime.now(dt.UTC)
    with terminal_connection(engine, "purging synced operations", write=True) as connection:
        rows = connection.execute(
            sa.select(
                outbox.c.seq,
                outbox.c.op_id,
                outbox.c.version,
                outbox.c.topic,
                outbox.c.recorded_at,
            )
            .where(_purgeable(plan.before))
            .order_by(outbox.c.seq)
        ).all()
        spans = _spans(rows)
        purge_id = _log(connection, user, role, purged_at, plan.before, spans)
        _move(connection, rows, purge_id)
    return Purge(
        id=purge_id,
        user=user,
        role=role,
        purged_at=purged_at,
        before=plan.before,
        topics=spans,
    )


def purge_log(engine: Engine) -> list[Purge]:
    """Every purge this till ran, oldest first."""
    with terminal_connection(engine, "reading the purge log", write=False) as connection:
        rows = connection.execute(sa.select(purges).order_by(purges.c.id)).all()
    return [
        Purge(
            id=row.id,
            user=row.user,
            role=row.role,
            purged_at=_utc(row.purged_at),
            before=None if row.before is None else _utc(row.before),
            topics=_decode_counts(row.counts),
        )
        for row in rows
    ]


def purged_counts(
    engine: Engine, topic: str | None = None, period: Period | None = None
) -> dict[str, int]:
    """Purged operations (distinct op ids) per topic, recorded in `period` (None: any time)."""
    query = sa.select(purged.c.topic, sa.func.count(sa.distinct(purged.c.op_id))).group_by(
        purged.c.topic
    )
    query = query.where(*_filters(topic, period))
    with terminal_connection(engine, "counting purged operations", write=False) as connection:
        return {name: int(count) for name, count in connection.execute(query)}


def purged_keys(engine: Engine, topic: str, period: Period | None = None) -> list[tuple[str, int]]:
    """(op_id, version) of every purged row of `topic` recorded in `period`, sorted."""
    query = (
        sa.select(purged.c.op_id, purged.c.version)
        .where(*_filters(topic, period))
        .order_by(purged.c.op_id, purged.c.version)
    )
    with terminal_connection(engine, "listing purged operations", write=False) as connection:
        return [(str(op_id), int(version)) for op_id, version in connection.execute(query)]


# -- the rows a purge takes ---------------------------------------------------------------


def _purgeable(before: dt.datetime | None) -> sa.ColumnElement[bool]:
    """Acknowledged rows of operations whose every version is acknowledged (and, with a
    bound, recorded before it)."""
    kept = outbox.c.state != ACKED
    if before is not None:
        kept = sa.or_(kept, outbox.c.recorded_at >= before)
    held_back = sa.select(outbox.c.op_id).where(kept)
    return sa.and_(outbox.c.state == ACKED, outbox.c.op_id.not_in(held_back))


def _spans(rows: Sequence[Any]) -> list[TopicSpan]:
    """Per topic: how many rows, recorded from when to when."""
    seen: dict[str, list[dt.datetime]] = {}
    for row in rows:
        seen.setdefault(row.topic, []).append(_utc(row.recorded_at))
    return [
        TopicSpan(topic=topic, rows=len(times), first=min(times), last=max(times))
        for topic, times in sorted(seen.items())
    ]


def _log(
    connection: sa.Connection,
    user: str,
    role: str,
    purged_at: dt.datetime,
    before: dt.datetime | None,
    spans: list[TopicSpan],
) -> int:
    return int(
        connection.execute(
            purges.insert()
            .values(
                user=user,
                role=role,
                purged_at=purged_at,
                before=before,
                counts=_encode_counts(spans),
            )
            .returning(purges.c.id)
        ).scalar_one()
    )


def _move(connection: sa.Connection, rows: Sequence[Any], purge_id: int) -> None:
    """Keep a slim row of each and delete them from the outbox."""
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        connection.execute(
            purged.insert(),
            [
                {
                    "op_id": row.op_id,
                    "version": row.version,
                    "seq": row.seq,
                    "topic": row.topic,
                    "recorded_at": row.recorded_at,
                    "purge_id": purge_id,
                }
                for row in chunk
            ],
        )
        connection.execute(outbox.delete().where(outbox.c.seq.in_([row.seq for row in chunk])))


def _filters(topic: str | None, period: Period | None) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if topic is not None:
        conditions.append(purged.c.topic == up_topic(topic))
    since, until = period.utc() if period is not None else (None, None)
    if since is not None:
        conditions.append(purged.c.recorded_at >= since)
    if until is not None:
        conditions.append(purged.c.recorded_at < until)
    return conditions


def _bound(before: Period | dt.datetime | None) -> dt.datetime | None:
    """The upper bound in UTC (the stores keep timestamps in UTC)."""
    if isinstance(before, Period):
        if before.since is not None:
            raise ConfigError("a purge takes an upper bound only (--before), not --since")
        return before.utc()[1]
    if before is None:
        return None
    return _utc(before).astimezone(dt.UTC)


def _encode_counts(spans: list[TopicSpan]) -> str:
    return json.dumps(
        {
            span.topic: {
                "rows": span.rows,
                "first": span.first.isoformat(),
                "last": span.last.isoformat(),
            }
            for span in spans
        },
        sort_keys=True,
    )


def _decode_counts(text: str) -> list[TopicSpan]:
    counts: dict[str, dict[str, Any]] = json.loads(text)
    return [
        TopicSpan(
            topic=topic,
            rows=int(span["rows"]),
            first=dt.datetime.fromisoformat(span["first"]),
            last=dt.datetime.fromisoformat(span["last"]),
        )
        for topic, span in sorted(counts.items())
    ]


def _utc(moment: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive; every timestamp cajasync stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
