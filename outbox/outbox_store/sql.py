"""The terminal outbox on SQLAlchemy (SQLite): each call one short transaction of its own.

SQLAlchemy's errors stop here: `terminal_connection` turns them into cajasync errors
(NotInitialised on a database `cajasync terminal init` never set up).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.store_faults import terminal_connection
from cajasync.core.terminal_tables import ACKED, PENDING, outbox, purged
from cajasync.errors import UnknownOperation
from outbox import claims
from outbox.outbox_store.base import PendingOp, check_state, missing_ops
from outbox.record import Recorded, record
from schemas.ops import Operation
from schemas.topics import up_topic

_PENDING_COLUMNS = (
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


class SqlOutboxStore:
    """The outbox of the terminal database on `engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        operation: Operation,
        *,
        op_id: uuid.UUID | None = None,
        now: dt.datetime | None = None,
    ) -> Recorded:
        """Append `operation` in a transaction of its own (the POS calls `record()` in its)."""
        with self._transaction("recording an operation") as connection:
            return record(connection, operation, op_id=op_id, now=now)

    def claim_pending(self, *, after_seq: int, limit: int) -> list[claims.OutRow]:
        """Up to `limit` pending rows with seq above `after_seq`, in seq order."""
        with self._reading("claiming outbox rows") as connection:
            return claims.claim_pending(connection, after_seq=after_seq, limit=limit)

    def claim_stale(self, *, sent_before: float, after_seq: int, limit: int) -> list[claims.OutRow]:
        """Up to `limit` sent rows above `after_seq` confirmed before `sent_before`."""
        with self._reading("claiming unanswered outbox rows") as connection:
            return claims.claim_stale(
                connection, sent_before=sent_before, after_seq=after_seq, limit=limit
            )

    def mark_sent(self, seqs: Iterable[int], *, now: float) -> int:
        """Broker-confirmed rows become sent; how many changed."""
        with self._transaction("recording broker confirms") as connection:
            return claims.mark_sent(connection, seqs, now=now)

    def mark_refused(self, reasons: Mapping[int, str]) -> int:
        """Rows the broker returned or nacked go back to pending with why; how many changed."""
        with self._transaction("recording refused publishes") as connection:
            return claims.mark_refused(connection, reasons)

    def list_pending(
        self, *, topic: str | None = None, state: str | None = None, limit: int | None = None
    ) -> list[PendingOp]:
        """Every operation not yet acked (never sent, sent, rejected), oldest first."""
        query = sa.select(*_PENDING_COLUMNS).where(outbox.c.state != ACKED).order_by(outbox.c.seq)
        if topic is not None:
            query = query.where(outbox.c.topic == up_topic(topic))
        if state is not None:
            query = query.where(outbox.c.state == check_state(state))
        if limit is not None:
            query = query.limit(limit)
        with self._reading("listing pending operations") as connection:
            return [_pending_op(row) for row in connection.execute(query)]

    def replay(self, op_ids: Sequence[uuid.UUID] | None = None) -> int:
        """Queue the given operations (every version), or with None every row not acked, again.

        Raises UnknownOperation naming the ids this outbox does not hold; nothing changes then.
        """
        with self._transaction("queueing operations again") as connection:
            condition = outbox.c.state != ACKED
            if op_ids is not None:
                wanted = {str(op_id) for op_id in op_ids}
                found = connection.execute(
                    sa.select(outbox.c.op_id).where(outbox.c.op_id.in_(wanted))
                ).scalars()
                if missing := missing_ops(wanted, found):
                    raise UnknownOperation(missing + _purged_note(connection, wanted))
                condition = outbox.c.op_id.in_(wanted)
            result = connection.execute(
                outbox.update()
                .where(condition)
                .values(state=PENDING, sent_at=None, settled_at=None, last_error=None)
            )
            return int(result.rowcount)

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per topic and state, e.g. {"ventas": {"acked": 10, "pending": 2}}."""
        query = sa.select(outbox.c.topic, outbox.c.state, sa.func.count()).group_by(
            outbox.c.topic, outbox.c.state
        )
        counts: dict[str, dict[str, int]] = {}
        with self._reading("counting outbox rows") as connection:
            for topic, state, count in connection.execute(query):
                counts.setdefault(topic, {})[state] = int(count)
        return counts

    def _transaction(self, doing: str) -> AbstractContextManager[sa.Connection]:
        return terminal_connection(self._engine, doing, write=True)

    def _reading(self, doing: str) -> AbstractContextManager[sa.Connection]:
        return terminal_connection(self._engine, doing, write=False)


def _purged_note(connection: sa.Connection, wanted: set[str]) -> str:
    """Which of the missing ids were purged after the server acknowledged them."""
    gone = connection.execute(
        sa.select(purged.c.op_id).where(purged.c.op_id.in_(wanted)).distinct()
    ).scalars()
    ids = sorted(gone)
    if not ids:
        return ""
    return f" ({', '.join(ids)}: purged after the server acknowledged it; nothing to send)"


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
