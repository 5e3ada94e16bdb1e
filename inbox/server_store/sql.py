"""The server store on SQLAlchemy Core, for SQLite and PostgreSQL.

Every batch is a handful of bulk statements in one transaction: insert the tracking rows
(ON CONFLICT DO NOTHING ... RETURNING tells which are new), upsert the highest versions,
mark the stale ones, reassemble touched weekly files, then advance each terminal's progress
under a row lock taken in terminal order, so competing server processes serialise there.
Seqs recorded lost (sql_lost.py) are recorded, and taken back by a batch, under that lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.dialect import Dialect
from cajasync.core.server_tables import APPLIED, REJECTED, STALE, operations, progress, received
from cajasync.core.store_faults import server_transaction
from inbox.server_store import incarnations, rules, sql_incarnations, sql_lost, sql_weekly
from inbox.server_store.base import (
    Gap,
    GapState,
    Incoming,
    LostRange,
    TerminalStats,
    Verdict,
    WeeklyFile,
    amount_of,
    voided_of,
)
from inbox.server_store.lost import next_lost, restart_points
from inbox.server_store.sql_incarnations import SqlBook
from schemas.codec import to_json
from schemas.feed import HighWaterMark, HighWaterRequest

SEQ_PAGE: Final = 512


class SqlServerStore:
    """A ServerStore on a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = Dialect(engine)

    def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
        """Record and apply a batch in one transaction; one verdict per message, in order.
        Second live copies of a terminal are refused first (inbox/server_store/incarnations.py)."""
        now = dt.datetime.now(dt.UTC)
        with self._transaction("applying a batch") as connection:
            screened = incarnations.screen(batch, SqlBook(connection, self._dialect), now)
            verdicts = self._apply(connection, screened.batch, now)
        return screened.mark(verdicts)

    def register(self, request: HighWaterRequest) -> HighWaterMark:
        """Register a terminal's new incarnation; where it continues and what is held."""
        now = dt.datetime.now(dt.UTC)
        with self._transaction(f"registering a new database of terminal {request.terminal}") as c:
            return sql_incarnations.register(c, self._dialect, request, now)

    def lineages(self) -> dict[str, list[incarnations.Incarnation]]:
        """Every terminal's incarnations."""
        with self._transaction("reading incarnations") as connection:
            return sql_incarnations.lineages(connection)

    def stats(self) -> list[TerminalStats]:
        """Progress and current operations per topic, by terminal."""
        counts = (
            sa.select(operations.c.terminal, operations.c.topic, sa.func.count())
            .group_by(operations.c.terminal, operations.c.topic)
            .order_by(operations.c.terminal, operations.c.topic)
        )
        with self._transaction("reading stats") as connection:
            rows = connection.execute(sa.select(progress).order_by(progress.c.terminal)).all()
            topics: dict[str, dict[str, int]] = {}
            for terminal, topic, count in connection.execute(counts):
                topics.setdefault(terminal, {})[topic] = count
            lost = sql_lost.counts(connection)
        return [
            TerminalStats(
                r.terminal,
                r.contiguous_seq,
                r.max_seq,
                dict(sorted(topics.get(r.terminal, {}).items())),
                lost.get(r.terminal, 0),
            )
            for r in rows
        ]

    def gaps(self) -> list[Gap]:
        """The first missing range of every terminal with a hole below its max seq."""
        next_held = (
            sa.select(sa.func.min(received.c.seq))
            .where(received.c.terminal == progress.c.terminal)
            .where(received.c.seq > progress.c.contiguous_seq)
            .scalar_subquery()
        )
        query = (
            sa.select(progress.c.terminal, progress.c.contiguous_seq, next_held)
            .where(progress.c.max_seq > progress.c.contiguous_seq)
            .order_by(progress.c.terminal)
        )
        with self._transaction("looking for gaps") as connection:
            rows = connection.execute(query).all()
        return [Gap(terminal, after + 1, held - 1) for terminal, after, held in rows]

    def mark_lost(self, registered_before: dt.datetime) -> list[LostRange]:
        """Record as lost the seqs missing at or below a restart point registered before
        `registered_before` (inbox/server_store/lost.py); the ranges recorded."""
        now = dt.datetime.now(dt.UTC)
        with self._transaction("recording lost seqs") as connection:
            terminals = sql_lost.candidates(connection, registered_before)
            if not terminals:
                return []
            lineages = sql_incarnations.lineages(connection, terminals)
            recorded: list[LostRange] = []
            updates = []
            for terminal, contiguous in _lock_progress(connection, terminals):
                points = restart_points(lineages.get(terminal, []), registered_before)
                after = contiguous
                while held := next_lost(
                    terminal, after, sql_lost.next_held(connection, terminal, after), points, now
                ):
                    recorded.append(held)
                    after = _contiguous(connection, terminal, held.to_seq)
                if after != contiguous:
                    updates.append({"t": terminal, "contiguous_seq": after, "updated_at": now})
            sql_lost.record(connection, recorded)
            if updates:
                connection.execute(
                    progress.update().where(progress.c.terminal == sa.bindparam("t")), updates
                )
        return recorded

    def lost(self) -> list[LostRange]:
        """Every lost range, by terminal and seq."""
        with self._transaction("reading lost seqs") as connection:
            return sql_lost.ranges(connection)

    def gap_states(self) -> list[GapState]:
        """The gap states ingest saved last, by terminal."""
        with self._transaction("reading gap states") as connection:
            return sql_lost.gap_states(connection)

    def save_gap_states(self, states: Sequence[GapState]) -> None:
        """Replace the saved gap states with `states`."""
        with self._transaction("saving gap states") as connection:
            sql_lost.save_gap_states(connection, states)

    def weekly_files(self) -> list[WeeklyFile]:
        """Every weekly file seen, by terminal, week and name."""
        with self._transaction("reading weekly files") as connection:
            return sql_weekly.read_files(connection)

    def _transaction(self, doing: str) -> AbstractContextManager[sa.Connection]:
        """A transaction whose database errors become StoreUnavailable (an outage: retry),
        StoreDataError (a value the database refuses) or StoreError, naming the store."""
        return server_transaction(self._engine, "server store", doing)

    def _apply(
        self, connection: sa.Connection, batch: Sequence[Incoming], now: dt.datetime
    ) -> list[Verdict]:
        planned = rules.plan(batch)
        if not planned.rows:
            return rules.verdicts(planned, rules.Learned(set(), set(), {}))
        learned = self._record(connection, planned, now)
        new_rows = [planned.rows[key] for key in learned.new]
        self._advance(connection, new_rows, now)
        return rules.verdicts(planned, learned)

    def _record(
        self, connection: sa.Connection, planned: rules.Plan, now: dt.datetime
    ) -> rules.Learned:
        rows = planned.sorted_rows()
        new = _insert_received(connection, self._dialect, rows, now)
        stored = _stored(connection, [row.key for row in rows if row.key not in new])
        new_rows = [row for row in rows if row.key in new]
        applied = _upsert_current(connection, self._dialect, new_rows, now)
        _mark_stale(connection, [r.key for r in new_rows if r.accepted and r.key not in applied])
        current = [r.envelope for r in new_rows if r.envelope is not None and r.key in applied]
        sql_weekly.record_chunks(connection, self._dialect, current, now)
        return rules.Learned(new=new, applied=applied, stored=stored)

    def _advance(
        self, connection: sa.Connection, new_rows: list[rules.Row], now: dt.datetime
    ) -> None:
        """Move each touched terminal's progress on, in three statements whatever the number
        of terminals: create the missing rows, lock them in terminal order, then one UPDATE
        that walks contiguity and the max seq in SQL (`_progress_update`).

        The UPDATE starts after the lock is held, so under READ COMMITTED it sees every
        tracking row committed by a competing process before it; that process's later
        seqs, still uncommitted, are walked by its own UPDATE once it gets the lock."""
        terminals = sorted({row.terminal for row in new_rows})
        if not terminals:
            return
        if self._dialect.name == "postgresql":
            # psycopg prepares a statement run 5 times; PostgreSQL may then keep a generic
            # plan made while inbox_received was small (sequential scans), which grew with
            # the table: at 20-row batches 3 ms per batch instead of 0.2 (bench.ingest_profile)
            connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        fresh = [
            {"terminal": t, "contiguous_seq": 0, "max_seq": 0, "updated_at": now} for t in terminals
        ]
        connection.execute(self._dialect.insert(progress).on_conflict_do_nothing(), fresh)
        reached = dict(_lock_progress(connection, terminals))
        sql_lost.reclaim(connection, _taken_back(new_rows, reached))
        connection.execute(_progress_update(terminals, now))


def _progress_update(terminals: list[str], now: dt.datetime) -> sa.Update:
    """One UPDATE of the terminals' progress rows: contiguity walked over the held seqs
    (the last of the run that follows `contiguous_seq`; unchanged when the next seq is not
    held), the max seq raised to the highest held. Both use the (terminal, seq) index:
    an index probe, and an ordered scan that stops at the first seq without a successor."""
    p, held, after = progress.c, received.alias("held"), received.alias("after")
    next_held = sa.exists().where(held.c.terminal == p.terminal, held.c.seq == p.contiguous_seq + 1)
    run_end = (
        sa.select(held.c.seq)
        .where(held.c.terminal == p.terminal, held.c.seq > p.contiguous_seq)
        .where(
            ~sa.exists().where(after.c.terminal == held.c.terminal, after.c.seq == held.c.seq + 1)
        )
        .order_by(held.c.seq)
        .limit(1)
        .scalar_subquery()
    )
    highest = (
        sa.select(held.c.seq)
        .where(held.c.terminal == p.terminal)
        .order_by(held.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        progress.update()
        .where(p.terminal.in_(terminals))
        .values(
            contiguous_seq=sa.case((next_held, run_end), else_=p.contiguous_seq),
            max_seq=sa.case((highest > p.max_seq, highest), else_=p.max_seq),
            updated_at=now,
        )
    )


def _lock_progress(connection: sa.Connection, terminals: list[str]) -> list[tuple[str, int]]:
    """(terminal, contiguous seq) of each terminal, its progress row locked, in terminal order."""
    locked = connection.execute(
        sa.select(progress.c.terminal, progress.c.contiguous_seq)
        .where(progress.c.terminal.in_(terminals))
        .order_by(progress.c.terminal)
        .with_for_update()
    )
    return [(terminal, contiguous) for terminal, contiguous in locked]


def _taken_back(new_rows: list[rules.Row], reached: dict[str, int]) -> dict[str, set[int]]:
    """Seqs of new rows at or below their terminal's contiguity: they can only be lost seqs
    (every other seq up to there is held), which these operations take back."""
    taken: dict[str, set[int]] = {}
    for row in new_rows:
        if row.seq <= reached.get(row.terminal, 0):
            taken.setdefault(row.terminal, set()).add(row.seq)
    return taken


def _insert_received(
    connection: sa.Connection, dialect: Dialect, rows: list[rules.Row], now: dt.datetime
) -> set[rules.Key]:
    values = [
        {
            "op_id": row.op_id,
            "version": row.version,
            "terminal": row.terminal,
            "seq": row.seq,
            "topic": row.topic,
            "status": APPLIED if row.accepted else REJECTED,
            "reason": row.reason,
            "received_at": now,
            "digest": row.digest,
        }
        for row in rows
    ]
    insert, params = dialect.bulk_json(received, values)
    statement = insert.on_conflict_do_nothing().returning(received.c.op_id, received.c.version)
    return {(op_id, version) for op_id, version in connection.execute(statement, params)}


def _stored(connection: sa.Connection, keys: list[rules.Key]) -> dict[rules.Key, rules.Held]:
    if not keys:
        return {}
    wanted = set(keys)
    r = received.c
    query = sa.select(r.op_id, r.version, r.status, r.reason, r.digest).where(
        r.op_id.in_(sorted({op_id for op_id, _ in keys}))
    )
    return {
        (op_id, version): rules.Held(status, reason, digest or "")
        for op_id, version, status, reason, digest in connection.execute(query)
        if (op_id, version) in wanted
    }


def _upsert_current(
    connection: sa.Connection, dialect: Dialect, rows: list[rules.Row], now: dt.datetime
) -> set[rules.Key]:
    values = [_operation_values(row, now) for row in rules.current_candidates(rows)]
    if not values:
        return set()
    # one JSON document on PostgreSQL: JSON payloads are slow to escape into text[] arrays,
    # and multi-row VALUES make psycopg re-parse thousands of placeholders per batch
    upsert, params = dialect.bulk_json(operations, values, json_texts=["payload"])
    excluded = upsert.excluded
    statement = upsert.on_conflict_do_update(
        index_elements=[operations.c.op_id],
        set_={name: excluded[name] for name in values[0] if name != "op_id"},
        where=operations.c.version < excluded.version,
    ).returning(operations.c.op_id, operations.c.version)
    return {(op_id, version) for op_id, version in connection.execute(statement, params)}


def _operation_values(row: rules.Row, now: dt.datetime) -> dict[str, object]:
    envelope = row.envelope
    assert envelope is not None
    return {
        "op_id": row.op_id,
        "version": row.version,
        "terminal": row.terminal,
        "seq": row.seq,
        "topic": row.topic,
        "recorded_at": envelope.recorded_at,
        "amount": amount_of(envelope),
        "voided": voided_of(envelope),
        "payload": to_json(envelope.op).decode(),
        "applied_at": now,
    }


def _mark_stale(connection: sa.Connection, keys: list[rules.Key]) -> None:
    if not keys:
        return
    statement = (
        received.update()
        .where(received.c.op_id == sa.bindparam("k_op_id"))
        .where(received.c.version == sa.bindparam("k_version"))
        .values(status=STALE)
    )
    connection.execute(statement, [{"k_op_id": o, "k_version": v} for o, v in keys])


def _contiguous(connection: sa.Connection, terminal: str, contiguous: int) -> int:
    """Walk the held seqs above `contiguous` in pages while they follow on."""
    while True:
        seqs = (
            connection.execute(
                sa.select(received.c.seq)
                .where(received.c.terminal == terminal, received.c.seq > contiguous)
                .order_by(received.c.seq)
                .limit(SEQ_PAGE)
            )
            .scalars()
            .all()
        )
        advanced = rules.advance(contiguous, seqs)
        if len(seqs) < SEQ_PAGE or advanced - contiguous < len(seqs):
            return advanced
        contiguous = advanced
