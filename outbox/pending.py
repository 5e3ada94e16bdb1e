"""Operaciones Pendientes: what the server has not acknowledged yet, and replaying it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.terminal_tables import ACKED, PENDING, STATES, outbox
from cajasync.errors import ConfigError, UnknownOperation
from schemas.topics import up_topic


class PendingOp(msgspec.Struct, frozen=True, kw_only=True):
    """One outbox row the server has not acknowledged."""

    op_id: str
    seq: int
    topic: str
    version: int
    state: str
    attempts: int
    last_error: str | None
    recorded_at: dt.datetime
    sent_at: dt.datetime | None


def list_pending(
    engine: Engine,
    *,
    topic: str | None = None,
    state: str | None = None,
    limit: int | None = None,
) -> list[PendingOp]:
    """Every operation not yet acked (never sent, sent, rejected), oldest first."""
    query = (
        sa.select(
            outbox.c.op_id,
            outbox.c.seq,
            outbox.c.topic,
            outbox.c.version,
            outbox.c.state,
            outbox.c.attempts,
            outbox.c.last_error,
            outbox.c.recorded_at,
            outbox.c.sent_at,
        )
        .where(outbox.c.state != ACKED)
        .order_by(outbox.c.seq)
    )
    if topic is not None:
        query = query.where(outbox.c.topic == up_topic(topic))
    if state is not None:
        query = query.where(outbox.c.state == _state(state))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        return [_pending_op(row) for row in connection.execute(query)]


def replay(engine: Engine, op_ids: Sequence[uuid.UUID] | None = None) -> int:
    """Queue operations again: the given op ids (every version), or with None every non-acked row.

    Raises UnknownOperation naming the ids this outbox does not hold; nothing changes then.
    """
    with engine.begin() as connection:
        condition = outbox.c.state != ACKED
        if op_ids is not None:
            wanted = {str(op_id) for op_id in op_ids}
            found = set(
                connection.execute(
                    sa.select(outbox.c.op_id).where(outbox.c.op_id.in_(wanted))
                ).scalars()
            )
            if missing := sorted(wanted - found):
                raise UnknownOperation(f"not in this terminal's outbox: {', '.join(missing)}")
            condition = outbox.c.op_id.in_(wanted)
        result = connection.execute(
            outbox.update()
            .where(condition)
            .values(state=PENDING, sent_at=None, settled_at=None, last_error=None)
        )
        return int(result.rowcount)


def outbox_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Rows per topic and state, e.g. {"ventas": {"acked": 10, "pending": 2}}."""
    query = sa.select(outbox.c.topic, outbox.c.state, sa.func.count()).group_by(
        outbox.c.topic, outbox.c.state
    )
    counts: dict[str, dict[str, int]] = {}
    with engine.connect() as connection:
        for topic, state, count in connection.execute(query):
            counts.setdefault(topic, {})[state] = int(count)
    return counts


def _state(name: str) -> str:
    if name not in STATES:
        raise ConfigError(f"unknown state {name!r}; expected one of: {', '.join(STATES)}")
    return name


def _pending_op(row: Any) -> PendingOp:
    sent = row.sent_at
    return PendingOp(
        op_id=row.op_id,
        seq=row.seq,
        topic=row.topic,
        version=row.version,
        state=row.state,
        attempts=row.attempts,
        last_error=row.last_error,
        recorded_at=_utc(row.recorded_at),
        sent_at=None if sent is None else dt.datetime.fromtimestamp(sent, dt.UTC),
    )


def _utc(moment: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive; every timestamp cajasync stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
