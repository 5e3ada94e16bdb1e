"""The POS-facing write API: append an operation to the outbox in the caller's transaction.

The caller owns the transaction: cajasync never commits. If the POS rolls back its sale,
the outbox row and its seq vanish with it, so `seq` stays contiguous.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa

from cajasync.core.identity import NO_IDENTITY, NO_TABLES
from cajasync.core.store_faults import kind_of, store_error
from cajasync.core.terminal_tables import PENDING, outbox, purged, terminal
from cajasync.errors import NotInitialised, StoreError, UnknownOperation
from schemas.codec import encode
from schemas.envelope import OpEnvelope
from schemas.ops import Operation, WeeklyFileChunk, topic_of
from schemas.validation import check_envelope, check_size, file_sha256, validate_operation

if TYPE_CHECKING:  # a caller passing a Session loaded the ORM; everyone else never needs it
    from sqlalchemy.orm import Session

WEEKLY_CHUNK_SIZE = 256 * 1024

# Built once: constructing a statement per call costs more than executing it (write path).
_NEXT_SEQ = (
    terminal.update()
    .where(terminal.c.id == 1)
    .values(last_seq=terminal.c.last_seq + 1)
    .returning(terminal.c.last_seq, terminal.c.terminal, terminal.c.incarnation)
)
_INSERT = outbox.insert()
_LATEST_VERSION = sa.select(sa.func.max(outbox.c.version)).where(
    outbox.c.op_id == sa.bindparam("op_id")
)
# An operation purged after the server acknowledged it (outbox/purge.py) left its versions here.
_LATEST_PURGED = sa.select(sa.func.max(purged.c.version)).where(
    purged.c.op_id == sa.bindparam("op_id")
)


class Recorded(NamedTuple):
    """Where an operation landed in the outbox."""

    seq: int
    op_id: uuid.UUID
    version: int


def record(
    target: sa.Connection | Session,
    operation: Operation,
    *,
    op_id: uuid.UUID | None = None,
    now: dt.datetime | None = None,
) -> Recorded:
    """Append `operation` to the outbox inside the caller's open transaction.

    Without `op_id` this is a new operation (version 1). With the `op_id` of an operation
    already recorded, it is a new version of it (a void or a correction) and is queued
    again, whether or not the earlier version was sent.

    An operation the server would reject (a rule of `schemas.validation`, a limit of
    `schemas.limits`) raises InvalidMessage naming the field, before anything is written.
    """
    validate_operation(operation)
    check_size(operation)
    connection = _connection(target)
    if op_id is None:
        op_id, version = uuid.uuid4(), 1
    else:
        version = _next_version(connection, op_id)
    seq, terminal_id, incarnation = _next_seq(connection)
    recorded_at = now or dt.datetime.now(dt.UTC)
    envelope = envelope_of(
        operation, terminal_id, Recorded(seq, op_id, version), incarnation, recorded_at
    )
    with _initialised(connection, "appending to the outbox"):
        connection.execute(
            _INSERT,
            {
                "seq": seq,
                "op_id": str(op_id),
                "version": version,
                "topic": topic_of(operation),
                "body": encode(envelope),
                "recorded_at": recorded_at,
                "state": PENDING,
                "attempts": 0,
            },
        )
    return Recorded(seq, op_id, version)


def envelope_of(
    operation: Operation,
    terminal_id: str,
    where: Recorded,
    incarnation: uuid.UUID | None,
    recorded_at: dt.datetime,
) -> OpEnvelope:
    """The envelope an operation travels in; InvalidMessage past the limits of its fields
    (past 2**31 - 1 ops: the caller's transaction must roll back)."""
    envelope = OpEnvelope(
        terminal=terminal_id,
        seq=where.seq,
        op_id=where.op_id,
        version=where.version,
        recorded_at=recorded_at,
        op=operation,
        incarnation=incarnation,
    )
    check_envelope(envelope)
    return envelope


def record_new_version(
    target: sa.Connection | Session, op_id: uuid.UUID, operation: Operation
) -> Recorded:
    """Record a corrected or voided operation; UnknownOperation if `op_id` was never recorded."""
    if _next_version(_connection(target), op_id) == 1:
        raise UnknownOperation(f"operation {op_id} is not in this terminal's outbox")
    return record(target, operation, op_id=op_id)


def record_weekly_file(
    target: sa.Connection | Session,
    *,
    week: str,
    file_name: str,
    content: bytes,
    chunk_size: int = WEEKLY_CHUNK_SIZE,
) -> list[Recorded]:
    """Record a weekly fiscal file as chunks the server reassembles and checks by sha256."""
    digest = file_sha256(content)
    count = max(1, -(-len(content) // chunk_size))
    return [
        record(
            target,
            WeeklyFileChunk(
                week=week,
                file_name=file_name,
                size=len(content),
                sha256=digest,
                chunk_index=index,
                chunk_count=count,
                data=content[index * chunk_size : (index + 1) * chunk_size],
            ),
        )
        for index in range(count)
    ]


def _connection(target: sa.Connection | Session) -> sa.Connection:
    """The connection to write on: `target` itself, or the Session's (told apart without
    importing the ORM, which costs a window or a CLI command 0.1 s to start)."""
    if isinstance(target, sa.Connection):
        return target
    return target.connection()


@contextmanager
def _initialised(connection: sa.Connection, doing: str) -> Iterator[None]:
    """Turn database errors into cajasync errors: the "no such table" of a database never
    set up into NotInitialised, the rest by what they mean (cajasync/core/store_faults.py)."""
    try:
        yield
    except (sa.exc.SQLAlchemyError, OverflowError) as exc:
        if kind_of(exc) is StoreError and not sa.inspect(connection).has_table(terminal.name):
            raise NotInitialised(NO_TABLES) from exc
        raise store_error(exc, "terminal store", doing, init="cajasync terminal init") from exc


def _next_seq(connection: sa.Connection) -> tuple[int, str, uuid.UUID | None]:
    with _initialised(connection, "taking the next seq"):
        row = connection.execute(_NEXT_SEQ).first()
    if row is None:
        raise NotInitialised(NO_IDENTITY)
    incarnation = None if row.incarnation is None else uuid.UUID(row.incarnation)
    return int(row.last_seq), str(row.terminal), incarnation


def _next_version(connection: sa.Connection, op_id: uuid.UUID) -> int:
    with _initialised(connection, "reading the versions of an operation"):
        latest = connection.execute(_LATEST_VERSION, {"op_id": str(op_id)}).scalar()
        if latest is None:  # never recorded, or purged whole: its versions went together
            latest = connection.execute(_LATEST_PURGED, {"op_id": str(op_id)}).scalar()
    return 1 if latest is None else int(latest) + 1
