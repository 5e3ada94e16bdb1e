"""The terminal incarnation rows of the SQL server store; inbox/server_store/incarnations.py has
the rules.

Registering and screening must not interleave: a batch screened before a registration and
applied after it would let an operation of the old database take a seq the new one is
about to use. On PostgreSQL ingest reads the rows `FOR KEY SHARE` (which takes the table's
ROW SHARE lock, whether or not a row matches) and a registration first locks the table
`IN EXCLUSIVE MODE`, which waits for the batches being screened and holds the next ones
back until it commits (a registration is rare and short). Counting a copy updates no key,
so competing batches never deadlock on it. On SQLite every write transaction is already
serial (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa

from cajasync.core.dialect import Dialect
from cajasync.core.server_tables import incarnations, progress, received
from inbox.server_store import incarnations as rules
from schemas.feed import HighWaterMark, HighWaterRequest

CHUNK: Final = 500  # parameters per IN (...) list


class SqlBook:
    """`incarnations.Book` on a connection inside the apply transaction."""

    def __init__(self, connection: sa.Connection, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    def lineages(self, terminals: Sequence[str]) -> dict[str, list[rules.Incarnation]]:
        """Each terminal's rows, locked against a registration (see the module doc)."""
        query = _select().where(incarnations.c.terminal.in_(list(terminals)))
        if self._dialect.name == "postgresql":
            query = query.with_for_update(key_share=True)
        return _by_terminal(self._connection.execute(query))

    def count_copies(self, counts: Mapping[rules.CopyKey, int], now: dt.datetime) -> None:
        """Add to each incarnation's refused operations; a copy never seen gets its row."""
        upsert = self._dialect.insert(incarnations)
        statement = upsert.on_conflict_do_update(
            index_elements=[incarnations.c.terminal, incarnations.c.incarnation],
            set_={
                "rejected": incarnations.c.rejected + upsert.excluded.rejected,
                "updated_at": upsert.excluded.updated_at,
            },
        )
        values = [
            {
                "terminal": terminal,
                "incarnation": incarnation,
                "status": rules.UNREGISTERED,
                "rejected": count,
                "updated_at": now,
            }
            for (terminal, incarnation), count in sorted(counts.items())
        ]
        self._connection.execute(statement, values)


def register(
    connection: sa.Connection, dialect: Dialect, request: HighWaterRequest, now: dt.datetime
) -> HighWaterMark:
    """Register the request's incarnation and answer with what the server holds."""
    if dialect.name == "postgresql":
        connection.exec_driver_sql(f"LOCK TABLE {incarnations.name} IN EXCLUSIVE MODE")
    terminal = request.terminal
    lineage = lineages(connection, [terminal]).get(terminal, [])
    holdings = _holdings(connection, request)
    start = rules.start_seq(lineage, request, holdings)
    written = rules.registration(lineage, request, start, now)
    if written:
        _save(connection, dialect, written, now)
        lineage = lineages(connection, [terminal])[terminal]
    return rules.answer(request, lineage, holdings)


def lineages(
    connection: sa.Connection, terminals: Sequence[str] | None = None
) -> dict[str, list[rules.Incarnation]]:
    """The incarnation rows of `terminals` (of every terminal when None), unlocked."""
    query = _select()
    if terminals is not None:
        query = query.where(incarnations.c.terminal.in_(list(terminals)))
    return _by_terminal(connection.execute(query))


_FIELDS: Final = (
    "terminal",
    "incarnation",
    "status",
    "start_seq",
    "end_seq",
    "successor",
    "rejected",
    "registered_at",
)


def _select() -> sa.Select[Any]:
    return sa.select(*(incarnations.c[name] for name in _FIELDS)).order_by(
        incarnations.c.terminal, incarnations.c.incarnation
    )


def _by_terminal(rows: sa.CursorResult[Any]) -> dict[str, list[rules.Incarnation]]:
    found: dict[str, list[rules.Incarnation]] = {}
    for row in rows.mappings():
        found.setdefault(row["terminal"], []).append(rules.Incarnation(**row))
    return found


def _save(
    connection: sa.Connection, dialect: Dialect, rows: list[rules.Incarnation], now: dt.datetime
) -> None:
    upsert = dialect.insert(incarnations)
    changing = ("status", "start_seq", "end_seq", "successor", "registered_at", "updated_at")
    statement = upsert.on_conflict_do_update(
        index_elements=[incarnations.c.terminal, incarnations.c.incarnation],
        set_={name: upsert.excluded[name] for name in changing},
    )
    values = [
        {
            "terminal": row.terminal,
            "incarnation": row.incarnation,
            "status": row.status,
            "start_seq": row.start_seq,
            "end_seq": row.end_seq,
            "successor": row.successor,
            "rejected": row.rejected,
            "registered_at": row.registered_at,
            "updated_at": now,
        }
        for row in rows
    ]
    connection.execute(statement, values)


def _holdings(connection: sa.Connection, request: HighWaterRequest) -> rules.Holdings:
    terminal = request.terminal
    mark = connection.execute(
        sa.select(progress.c.max_seq, progress.c.contiguous_seq).where(
            progress.c.terminal == terminal
        )
    ).first()
    held = connection.execute(
        sa.select(sa.func.count()).select_from(received).where(received.c.terminal == terminal)
    ).scalar_one()
    return rules.Holdings(
        max_seq=0 if mark is None else mark.max_seq,
        contiguous_seq=0 if mark is None else mark.contiguous_seq,
        held=held,
        rows=rules.held_rows(request, _held(connection, request)),
    )


def _held(connection: sa.Connection, request: HighWaterRequest) -> Iterator[tuple[int, str, int]]:
    """(seq, op_id, version) held for the terminal at the asked seqs or op ids."""
    c = received.c
    mine = sa.select(c.seq, c.op_id, c.version).where(c.terminal == request.terminal)
    seqs = sorted({row.seq for row in request.rows})
    op_ids = sorted({row.op_id for row in request.rows})
    for start in range(0, len(seqs), CHUNK):
        for seq, op_id, version in connection.execute(
            mine.where(c.seq.in_(seqs[start : start + CHUNK]))
        ):
            yield seq, op_id, version
    for start in range(0, len(op_ids), CHUNK):
        chunk = op_ids[start : start + CHUNK]
        for seq, op_id, version in connection.execute(mine.where(c.op_id.in_(chunk))):
            yield seq, op_id, version
