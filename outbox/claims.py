"""The relay's SQL: claim outbox rows to publish and settle what the broker said about them.

Every function runs one short statement on a connection the caller opened; none of them
waits on the network, so the POS can keep recording while the relay talks to the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import NamedTuple

import sqlalchemy as sa

from cajasync.core.store_faults import translated
from cajasync.core.terminal_tables import PENDING, SENT, outbox

# Rows per UPDATE: a whole default publish window in one statement, and well under the
# bound-parameter limit of SQLite since 3.32 (32,766).
IN_CHUNK = 5000


class OutRow(NamedTuple):
    """One outbox row as the relay publishes it."""

    seq: int
    op_id: str
    version: int
    topic: str
    body: bytes


_COLUMNS = (outbox.c.seq, outbox.c.op_id, outbox.c.version, outbox.c.topic, outbox.c.body)


def store_errors(terminal: str, doing: str) -> AbstractContextManager[None]:
    """Database errors while `doing` become cajasync errors naming the terminal."""
    return translated(f"terminal {terminal}", doing, init="cajasync terminal init")


def claim_pending(connection: sa.Connection, *, after_seq: int, limit: int) -> list[OutRow]:
    """Up to `limit` pending rows with seq above `after_seq`, in seq order (index scan)."""
    rows = connection.execute(
        sa.select(*_COLUMNS)
        .where(outbox.c.state == PENDING, outbox.c.seq > after_seq)
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    return [OutRow(*row) for row in rows]


def claim_stale(
    connection: sa.Connection, *, sent_before: float, after_seq: int, limit: int
) -> list[OutRow]:
    """Up to `limit` sent rows above `after_seq` confirmed before `sent_before` with no receipt."""
    rows = connection.execute(
        sa.select(*_COLUMNS)
        .where(outbox.c.state == SENT, outbox.c.seq > after_seq, outbox.c.sent_at < sent_before)
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    return [OutRow(*row) for row in rows]


def mark_sent(connection: sa.Connection, seqs: Iterable[int], *, now: float) -> int:
    """Broker-confirmed rows become sent; a row a receipt already settled is left alone."""
    statement = (
        outbox.update()
        .where(outbox.c.state.in_((PENDING, SENT)))
        .values(state=SENT, sent_at=now, attempts=outbox.c.attempts + 1, last_error=None)
    )
    return _update_in_chunks(connection, statement, sorted(seqs))


def mark_refused(connection: sa.Connection, reasons: Mapping[int, str]) -> int:
    """Rows the broker returned or nacked go (or stay) pending with why; attempts + 1."""
    by_reason: dict[str, list[int]] = {}
    for seq, reason in reasons.items():
        by_reason.setdefault(reason, []).append(seq)
    changed = 0
    for reason, seqs in by_reason.items():
        statement = (
            outbox.update()
            .where(outbox.c.state.in_((PENDING, SENT)))
            .values(state=PENDING, attempts=outbox.c.attempts + 1, last_error=reason)
        )
        changed += _update_in_chunks(connection, statement, sorted(seqs))
    return changed


def _update_in_chunks(connection: sa.Connection, statement: sa.Update, seqs: list[int]) -> int:
    changed = 0
    for start in range(0, len(seqs), IN_CHUNK):
        chunk = seqs[start : start + IN_CHUNK]
        changed += connection.execute(statement.where(outbox.c.seq.in_(chunk))).rowcount
    return changed
