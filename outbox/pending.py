"""Operaciones Pendientes: what the server has not acknowledged yet, and replaying it.

The operator's view of the outbox, on a terminal database's engine (outbox/outbox_store/sql.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from outbox.outbox_store.base import PendingOp
from outbox.outbox_store.sql import SqlOutboxStore


def list_pending(
    engine: Engine,
    *,
    topic: str | None = None,
    state: str | None = None,
    limit: int | None = None,
) -> list[PendingOp]:
    """Every operation not yet acked (never sent, sent, rejected), oldest first."""
    return SqlOutboxStore(engine).list_pending(topic=topic, state=state, limit=limit)


def replay(engine: Engine, op_ids: Sequence[uuid.UUID] | None = None) -> int:
    """Queue operations again: the given op ids (every version), or with None every non-acked row.

    Raises UnknownOperation naming the ids this outbox does not hold; nothing changes then.
    """
    return SqlOutboxStore(engine).replay(op_ids)


def outbox_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Rows per topic and state, e.g. {"ventas": {"acked": 10, "pending": 2}}."""
    return SqlOutboxStore(engine).counts()
