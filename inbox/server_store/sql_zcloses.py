"""The Z close rows (server_z_closes) and the sales a Z is checked against, on SQLAlchemy
Core, for SQLite and PostgreSQL. Every function runs on the caller's connection."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import msgspec
import sqlalchemy as sa

from cajasync.core.server_tables import Z_WAITING, operations, progress, z_closes
from schemas.envelope import OpEnvelope
from schemas.ops import Sale, ZClose
from schemas.topics import SALES

# A sale is recorded when (or after) it is rung up; a day of slack for a till's clock.
RECORDED_SLACK: Final = dt.timedelta(days=1)

_sale_decoder = msgspec.json.Decoder(Sale)
_z_decoder = msgspec.json.Decoder(ZClose)


@dataclass(frozen=True, slots=True)
class ZRow:
    """One Z close as the server tracks it."""

    terminal: str
    z_number: int
    op_id: str
    version: int
    seq: int
    state: str
    received_at: dt.datetime
    replay_asked: int
    replay_asked_at: dt.datetime | None
    absent: list[int]


def register(connection: sa.Connection, envelope: OpEnvelope, now: dt.datetime) -> bool:
    """Start tracking a Z close (waiting, to be checked now), or a newer version of one;
    False when this version (or a newer one) is tracked already."""
    z = envelope.op
    assert isinstance(z, ZClose)
    held = connection.execute(
        sa.select(z_closes.c.op_id, z_closes.c.version).where(
            z_closes.c.terminal == envelope.terminal, z_closes.c.z_number == z.number
        )
    ).first()
    if held is not None and held.op_id == str(envelope.op_id) and held.version >= envelope.version:
        return False
    values = {
        "op_id": str(envelope.op_id),
        "version": envelope.version,
        "seq": envelope.seq,
        "period_start": _utc(z.period_start),
        "period_end": _utc(z.period_end),
        "first_receipt": z.first_receipt,
        "last_receipt": z.last_receipt,
        "expected_count": z.sale_count,
        "expected_total": z.total,
        "found_count": 0,
        "found_total": Decimal(0),
        "figures": "{}",
        "state": Z_WAITING,
        "missing": "[]",
        "absent": "[]",
        "difference": "",
        "received_at": now,
        "replay_asked": 0,
        "replay_asked_at": None,
        "next_check_at": now,
        "updated_at": now,
    }
    if held is None:
        connection.execute(
            z_closes.insert().values(terminal=envelope.terminal, z_number=z.number, **values)
        )
    else:
        connection.execute(_where(z_closes.update(), envelope.terminal, z.number).values(values))
    return True


def waiting_of(connection: sa.Connection, terminals: Sequence[str]) -> list[tuple[str, int]]:
    """(terminal, Z number) of every waiting Z of these terminals."""
    if not terminals:
        return []
    query = (
        sa.select(z_closes.c.terminal, z_closes.c.z_number)
        .where(z_closes.c.state == Z_WAITING, z_closes.c.terminal.in_(sorted(terminals)))
        .order_by(z_closes.c.terminal, z_closes.c.z_number)
    )
    return [(t, n) for t, n in connection.execute(query)]


def due(connection: sa.Connection, now: dt.datetime) -> list[tuple[str, int]]:
    """(terminal, Z number) of every waiting Z whose next check is due."""
    query = (
        sa.select(z_closes.c.terminal, z_closes.c.z_number)
        .where(z_closes.c.state == Z_WAITING, z_closes.c.next_check_at <= now)
        .order_by(z_closes.c.terminal, z_closes.c.z_number)
    )
    return [(t, n) for t, n in connection.execute(query)]


def load(connection: sa.Connection, terminal: str, z_number: int) -> tuple[ZRow, ZClose] | None:
    """A tracked Z and the close itself (its current version, from server_operations)."""
    row = connection.execute(_where(sa.select(z_closes), terminal, z_number)).first()
    if row is None:
        return None
    payload = connection.execute(
        sa.select(operations.c.payload).where(operations.c.op_id == row.op_id)
    ).scalar()
    if payload is None:
        return None
    tracked = ZRow(
        terminal=row.terminal,
        z_number=row.z_number,
        op_id=row.op_id,
        version=row.version,
        seq=row.seq,
        state=row.state,
        received_at=_utc(row.received_at),
        replay_asked=row.replay_asked,
        replay_asked_at=None if row.replay_asked_at is None else _utc(row.replay_asked_at),
        absent=json.loads(row.absent),
    )
    return tracked, _z_decoder.decode(payload)


def sales_since(connection: sa.Connection, terminal: str, since: dt.datetime) -> list[Sale]:
    """The terminal's sales (current versions) recorded since `since` less a day of slack."""
    query = sa.select(operations.c.payload).where(
        operations.c.terminal == terminal,
        operations.c.topic == SALES,
        operations.c.recorded_at >= _utc(since) - RECORDED_SLACK,
    )
    return [_sale_decoder.decode(payload) for payload in connection.execute(query).scalars()]


def contiguous_seq(connection: sa.Connection, terminal: str) -> int:
    """The terminal's highest seq N with 1..N all held (0 when none)."""
    value = connection.execute(
        sa.select(progress.c.contiguous_seq).where(progress.c.terminal == terminal)
    ).scalar()
    return int(value or 0)


def save(connection: sa.Connection, terminal: str, z_number: int, values: dict[str, Any]) -> None:
    """Update a tracked Z."""
    connection.execute(_where(z_closes.update(), terminal, z_number).values(values))


def add_absent(
    connection: sa.Connection, terminal: str, z_number: int, absent: Sequence[int]
) -> bool:
    """Note the sale numbers the till says it has no sale for; False if the Z is unknown."""
    held = connection.execute(_where(sa.select(z_closes.c.absent), terminal, z_number)).scalar()
    if held is None:
        return False
    merged = sorted(set(json.loads(held)) | set(absent))
    save(connection, terminal, z_number, {"absent": json.dumps(merged)})
    return True


def listed(
    connection: sa.Connection,
    *,
    terminal: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    state: str | None,
) -> list[Any]:
    """Tracked Z closes by terminal and number, filtered by terminal, period end and state."""
    query = sa.select(z_closes).order_by(z_closes.c.terminal, z_closes.c.z_number)
    if terminal is not None:
        query = query.where(z_closes.c.terminal == terminal)
    if since is not None:
        query = query.where(z_closes.c.period_end >= _utc(since))
    if until is not None:
        query = query.where(z_closes.c.period_end < _utc(until))
    if state is not None:
        query = query.where(z_closes.c.state == state)
    return list(connection.execute(query))


def _where(statement: Any, terminal: str, z_number: int) -> Any:
    return statement.where(z_closes.c.terminal == terminal, z_closes.c.z_number == z_number)


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)
