"""Terminal side of the server's answers: receipts settle outbox rows, replays re-queue them
(a seq range, or the sales a Z close names).

Pure database functions on the caller's connection and transaction (no broker), so the
relay can apply a tick's worth of messages in one commit and tests need only SQLite.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import sqlalchemy as sa

from cajasync.core.terminal_tables import ACKED, PENDING, REJECTED, SENT, outbox, purged
from schemas.envelope import (
    OpEnvelope,
    Receipt,
    ReceiptItem,
    ReplayReport,
    ReplayRequest,
    ReplaySales,
)
from schemas.ops import Sale

# A sale is recorded when (or after) it is rung up; a day of slack for a till's clock.
RECORDED_SLACK: Final = dt.timedelta(days=1)
_envelope_decoder = msgspec.msgpack.Decoder(OpEnvelope)

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


@dataclass(frozen=True, slots=True)
class SalesReplayed:
    """What a ReplaySales did: the first seq re-queued (None: none) and the report to send
    (None when every number asked for was found)."""

    from_seq: int | None
    rows: int = 0
    report: ReplayReport | None = field(default=None)


def apply_replay_sales(connection: sa.Connection, request: ReplaySales) -> SalesReplayed:
    """Put every outbox row (every version) of the sales numbered `request.numbers` back to
    pending, whatever their state; report the numbers this outbox has no sale for.

    Sales are found by decoding the outbox rows of the topic recorded since the request's
    `since` (less a day), all of them when it names none.
    """
    wanted = set(request.numbers)
    query = sa.select(outbox.c.op_id, outbox.c.body).where(outbox.c.topic == request.topic)
    if request.since is not None:
        query = query.where(outbox.c.recorded_at >= _utc(request.since) - RECORDED_SLACK)
    found: dict[int, set[str]] = defaultdict(set)
    for op_id, body in connection.execute(query):
        op = _envelope_decoder.decode(body).op
        if isinstance(op, Sale) and op.number in wanted:
            found[op.number].add(op_id)
    op_ids = sorted({op_id for ids in found.values() for op_id in ids})
    first: int | None = None
    rows = 0
    if op_ids:
        first = connection.execute(
            sa.select(sa.func.min(outbox.c.seq)).where(outbox.c.op_id.in_(op_ids))
        ).scalar()
        rows = connection.execute(
            outbox.update()
            .where(outbox.c.op_id.in_(op_ids))
            .values(
                state=PENDING,
                settled_at=None,
                last_error=f"server asked to replay sales of Z {request.z_number}",
            )
        ).rowcount
    absent = sorted(wanted - set(found))
    report = None
    if absent:
        report = ReplayReport(
            terminal=request.terminal,
            z_number=request.z_number,
            missing=absent,
            topic=request.topic,
        )
    return SalesReplayed(first, rows, report)


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)
