"""Operaciones Pendientes: what the server has not acknowledged yet, and replaying it.

The operator's view of the outbox, on a terminal database's engine (outbox/outbox_store/sql.py):
each pending row with what it is about (ticket, amount, customer or file name, from
schemas/summaries.py), the total even when a page is asked for, and the whole story of
one operation (`show_operation`: every version, its state and reason, the operation).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.periods import Period
from cajasync.core.store_faults import terminal_connection
from cajasync.core.terminal_tables import ACKED, outbox, purged, purges
from cajasync.errors import InvalidMessage, UnknownOperation
from outbox.outbox_store.base import PendingOp, check_state
from outbox.outbox_store.sql import SqlOutboxStore
from outbox.views import ALL_DATES, PURGED, utc
from schemas.codec import decode_op, to_builtins
from schemas.ops import WeeklyFileChunk
from schemas.summaries import ChunkSummary, columns, headline, summary_or_reason
from schemas.topics import up_topic


class PendingRow(msgspec.Struct, frozen=True, kw_only=True):
    """A pending outbox row (every field of PendingOp) and what it is about: `reference`
    (ticket `A-12`, `Z 3`, a payment, a file name and chunk), `amount`, `customer` (or
    payee), `file_name` for a weekly file chunk, and every business column in `details`."""

    op_id: str
    seq: int
    topic: str
    version: int
    state: str
    attempts: int
    last_error: str | None
    recorded_at: dt.datetime
    sent_at: dt.datetime | None
    reference: str | None
    amount: Decimal | None
    customer: str | None
    file_name: str | None
    details: dict[str, Any]


class PendingPage(msgspec.Struct, frozen=True, kw_only=True):
    """The rows shown and how many match in all."""

    total: int
    ops: list[PendingRow]


class VersionView(msgspec.Struct, frozen=True, kw_only=True):
    """One version of an operation on this till: its state and timestamps, its reason
    (`last_error`: the server's when rejected), the operation itself (None once purged;
    a weekly chunk's data shown by its size)."""

    seq: int
    version: int
    state: str
    attempts: int | None
    last_error: str | None
    recorded_at: dt.datetime
    sent_at: dt.datetime | None
    settled_at: dt.datetime | None
    purged_at: dt.datetime | None
    operation: dict[str, Any] | None


class OperationHistory(msgspec.Struct, frozen=True, kw_only=True):
    """Every version of one operation, oldest first."""

    op_id: str
    topic: str
    versions: list[VersionView]


def list_pending(
    engine: Engine,
    *,
    topic: str | None = None,
    state: str | None = None,
    limit: int | None = None,
) -> list[PendingOp]:
    """Every operation not yet acked (never sent, sent, rejected), oldest first."""
    return SqlOutboxStore(engine).list_pending(topic=topic, state=state, limit=limit)


def pending_page(
    engine: Engine,
    *,
    topic: str | None = None,
    state: str | None = None,
    period: Period = ALL_DATES,
    limit: int | None = None,
    offset: int = 0,
) -> PendingPage:
    """The rows not yet acked, oldest first, with what each is about, up to `limit` from
    the `offset`-th on, and how many there are in all (counted in SQL; only the page's
    bodies are read)."""
    where = [outbox.c.state != ACKED]
    if topic is not None:
        where.append(outbox.c.topic == up_topic(topic))
    if state is not None:
        where.append(outbox.c.state == check_state(state))
    since, until = period.utc()
    if since is not None:
        where.append(outbox.c.recorded_at >= since)
    if until is not None:
        where.append(outbox.c.recorded_at < until)
    query = sa.select(outbox).where(*where).order_by(outbox.c.seq)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    with terminal_connection(engine, "listing pending operations", write=False) as connection:
        total = connection.execute(sa.select(sa.func.count()).where(*where)).scalar_one()
        rows = [_pending_row(row) for row in connection.execute(query)]
    return PendingPage(total=int(total), ops=rows)


def show_operation(engine: Engine, op_id: uuid.UUID) -> OperationHistory:
    """Every version this till holds of `op_id` (purged ones included); UnknownOperation
    when it holds none."""
    key = str(op_id)
    with terminal_connection(engine, f"reading operation {key}", write=False) as connection:
        rows = connection.execute(
            sa.select(outbox).where(outbox.c.op_id == key).order_by(outbox.c.version)
        ).all()
        gone = connection.execute(
            sa.select(purged, purges.c.purged_at)
            .join(purges, purges.c.id == purged.c.purge_id)
            .where(purged.c.op_id == key)
        ).all()
    if not rows and not gone:
        raise UnknownOperation(f"not in this terminal's outbox: {key}")
    versions = [_version(row) for row in rows] + [_purged_version(row) for row in gone]
    versions.sort(key=lambda v: v.version)
    topic = rows[0].topic if rows else gone[0].topic
    return OperationHistory(op_id=key, topic=topic, versions=versions)


def replay(engine: Engine, op_ids: Sequence[uuid.UUID] | None = None) -> int:
    """Queue operations again: the given op ids (every version), or with None every non-acked row.

    Raises UnknownOperation naming the ids this outbox does not hold; nothing changes then.
    """
    return SqlOutboxStore(engine).replay(op_ids)


def outbox_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Rows per topic and state, e.g. {"ventas": {"acked": 10, "pending": 2}}."""
    return SqlOutboxStore(engine).counts()


def _pending_row(row: Any) -> PendingRow:
    summary = summary_or_reason(row.body)
    reference, amount, customer = headline(summary)
    return PendingRow(
        op_id=row.op_id,
        seq=row.seq,
        topic=row.topic,
        version=row.version,
        state=row.state,
        attempts=row.attempts,
        last_error=row.last_error,
        recorded_at=utc(row.recorded_at),
        sent_at=_epoch(row.sent_at),
        reference=reference,
        amount=amount,
        customer=customer,
        file_name=summary.file_name if isinstance(summary, ChunkSummary) else None,
        details=columns(summary),
    )


def _version(row: Any) -> VersionView:
    return VersionView(
        seq=row.seq,
        version=row.version,
        state=row.state,
        attempts=row.attempts,
        last_error=row.last_error,
        recorded_at=utc(row.recorded_at),
        sent_at=_epoch(row.sent_at),
        settled_at=_epoch(row.settled_at),
        purged_at=None,
        operation=readable(row.body),
    )


def _purged_version(row: Any) -> VersionView:
    return VersionView(
        seq=row.seq,
        version=row.version,
        state=PURGED,
        attempts=None,
        last_error=None,
        recorded_at=utc(row.recorded_at),
        sent_at=None,
        settled_at=None,
        purged_at=utc(row.purged_at),
        operation=None,
    )


def readable(body: bytes) -> dict[str, Any]:
    """The operation in an outbox body as plain data; a weekly chunk's data as its size; a
    body that does not decode as its reason and size."""
    try:
        operation = decode_op(body).op
    except InvalidMessage as exc:
        return {"undecodable": exc.reason, "bytes": len(body)}
    data: dict[str, Any] = to_builtins(operation)
    if isinstance(operation, WeeklyFileChunk):
        data["data"] = f"<{len(operation.data):,} bytes>"
    return data


def _epoch(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)
