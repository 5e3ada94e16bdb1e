"""Transparent capture: a POS that maps its own sale table gets outbox rows in the same flush.

    track(PosSale, to_operation=lambda sale: Sale(...))

After that, every INSERT of a PosSale records version 1 of its operation, and every UPDATE
(a void, a correction) records the next version, on the flush's own connection: the POS
commits or rolls back both together, and calls nothing of cajasync.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Mapper

from cajasync.core.identity import load_identity
from cajasync.core.terminal_tables import outbox
from outbox.record import record
from schemas.codec import decode_op
from schemas.ops import Operation

T = TypeVar("T")

OP_NAMESPACE = uuid.UUID("5f1f4c7e-3a53-4a40-9a6a-0c4a5c0a7e11")


def default_op_id(connection: sa.Connection, mapper: Mapper[Any], target: Any) -> uuid.UUID:
    """A stable op id for a mapped row: terminal + table + primary key."""
    identity = load_identity(connection)
    key = ":".join(str(v) for v in mapper.primary_key_from_instance(target))
    return uuid.uuid5(OP_NAMESPACE, f"{identity.terminal}:{mapper.persist_selectable}:{key}")


def track(
    mapped_class: type[T],
    to_operation: Callable[[T], Operation],
    *,
    op_id: Callable[[T], uuid.UUID] | None = None,
    record_updates: bool = True,
) -> Callable[[], None]:
    """Record an outbox row whenever `mapped_class` is inserted (and updated); returns undo."""

    def _op_id(connection: sa.Connection, mapper: Mapper[Any], target: Any) -> uuid.UUID:
        return op_id(target) if op_id else default_op_id(connection, mapper, target)

    def after_insert(mapper: Mapper[Any], connection: sa.Connection, target: Any) -> None:
        record(connection, to_operation(target), op_id=_op_id(connection, mapper, target))

    def after_update(mapper: Mapper[Any], connection: sa.Connection, target: Any) -> None:
        if not _columns_changed(mapper, target):
            return  # dirty without a net change: nothing to send again
        operation, key = to_operation(target), _op_id(connection, mapper, target)
        if _latest_operation(connection, key) == operation:
            return  # e.g. a value set again after commit expired it: history cannot tell
        record(connection, operation, op_id=key)

    event.listen(mapped_class, "after_insert", after_insert)
    if record_updates:
        event.listen(mapped_class, "after_update", after_update)

    def untrack() -> None:
        event.remove(mapped_class, "after_insert", after_insert)
        if record_updates:
            event.remove(mapped_class, "after_update", after_update)

    return untrack


def _columns_changed(mapper: Mapper[Any], target: Any) -> bool:
    state = sa.inspect(target)
    return any(state.attrs[prop.key].history.has_changes() for prop in mapper.column_attrs)


def _latest_operation(connection: sa.Connection, op_id: uuid.UUID) -> Operation | None:
    body = connection.execute(
        sa.select(outbox.c.body)
        .where(outbox.c.op_id == str(op_id))
        .order_by(outbox.c.version.desc())
        .limit(1)
    ).scalar()
    return None if body is None else decode_op(body).op
