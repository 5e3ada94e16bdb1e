"""Terminal side of the server's answers: receipts settle outbox rows, replays re-queue them.

Pure database functions on the caller's connection and transaction (no broker), so the
relay can apply a tick's worth of messages in one commit and tests need only SQLite.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from cajasync.core.terminal_tables import ACKED, PENDING, REJECTED, SENT, outbox, purged
from schemas.envelope import Receipt, ReceiptItem, ReplayRequest

log = logging.getLogger(__name__)

# Which states each verdict may overwrite: an acked row stays acked.
_SETTLES: dict[str, tuple[str, ...]] = {
    ACKED: (PENDING, SENT, REJECTED),
    REJECTED: (PENDING, SENT),
}


def apply_receipt(connection: sa.Connection, receipt: Receipt) -> tuple[int, int]:
    """Settle the rows a receipt names; return how many became (acked, rejected).

    An item settles the row with its `(op_id, version)`, and only if its seq agrees when it
    names one (so a receipt meant for an older database never settles a reused seq). An item
    that names no `(op_id, version)` (a seq alone proves nothing: anyone could have claimed
    it) or none of this outbox's rows is ignored.
    """
    now = time.time()
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    for item in receipt.items:
        if item.op_id is not None and item.version is not None:
            groups[item.status, item.seq is not None].append(_parameters(item, now))
    counts = {ACKED: 0, REJECTED: 0}
    for (status, has_seq), parameters in groups.items():
        statement = _settle_statement(status, has_seq=has_seq)
        counts[status] += connection.execute(statement, parameters).rowcount
    return counts[ACKED], counts[REJECTED]


def apply_replay(connection: sa.Connection, request: ReplayRequest) -> int:
    """Put rows `from_seq..to_seq` back to pending, whatever their state; return how many.

    The server says it does not hold them, so even acked rows must travel again. Rows purged
    after the server acknowledged them (`cajasync tools purge-synced`) cannot: a server
    restored from a backup may ask for them; that is logged, and the rest is replayed.
    """
    _warn_purged(connection, request)
    result = connection.execute(
        outbox.update()
        .where(outbox.c.seq.between(request.from_seq, request.to_seq))
        .values(
            state=PENDING,
            settled_at=None,
            last_error=f"server asked to replay seq {request.from_seq}..{request.to_seq}",
        )
    )
    return result.rowcount


def _warn_purged(connection: sa.Connection, request: ReplayRequest) -> None:
    count, first, last = connection.execute(
        sa.select(sa.func.count(), sa.func.min(purged.c.seq), sa.func.max(purged.c.seq)).where(
            purged.c.seq.between(request.from_seq, request.to_seq)
        )
    ).one()
    if count:
        log.warning(
            "terminal %s: the server asks again for seq %d..%d; %d of them (seq %d..%d) were "
            "purged from this till after the server had acknowledged them "
            "(`cajasync tools purges`) and cannot be sent again",
            request.terminal,
            request.from_seq,
            request.to_seq,
            count,
            first,
            last,
        )


def _parameters(item: ReceiptItem, now: float) -> dict[str, Any]:
    reason = (item.reason or "rejected by the server") if item.status == REJECTED else None
    return {
        "m_seq": item.seq,
        "m_op_id": str(item.op_id),
        "m_version": item.version,
        "now": now,
        "reason": reason,
    }


def _settle_statement(status: str, *, has_seq: bool) -> sa.Update:
    # OR of equalities, not IN: an expanding IN cannot run as executemany.
    settles = sa.or_(*(outbox.c.state == state for state in _SETTLES[status]))
    conditions: list[sa.ColumnElement[bool]] = [
        settles,
        outbox.c.op_id == sa.bindparam("m_op_id"),
        outbox.c.version == sa.bindparam("m_version"),
    ]
    if has_seq:
        conditions.append(outbox.c.seq == sa.bindparam("m_seq"))
    return (
        outbox.update()
        .where(*conditions)
        .values(state=status, settled_at=sa.bindparam("now"), last_error=sa.bindparam("reason"))
    )
