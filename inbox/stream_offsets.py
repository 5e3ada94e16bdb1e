"""Where a till is in each broker stream it reads (`cajasync_broker_streams`).

Change events of the shared scopes come by RabbitMQ streams (`cajasync.s.all`,
`cajasync.s.loc.<location>`), which keep no offset for an AMQP 0-9-1 consumer: the till
keeps the offset of the last event it applied, written in the transaction that applied it,
and subscribes from the next one. So a crash between applying and acknowledging reads the
same events again (the replica's version and seq rules absorb them), never skips one.

`terminal init` stores the moment the till starts reading its streams (what its queue
would hold from then on; the snapshot of a first pull covers what came before): until an
event gives the till an offset, every session reads from that moment (from its whole
second, as a stream's chunks are stamped by the second: events of that second read twice
are absorbed, and the link skips those published before the moment). A stream without even
that (a till upgraded from the per-till copies, still bound to them) is read from `next`,
and that moment stored. An offset older than the stream's retention starts at the
stream's first event, and the gap in seqs that leaves asks the server for a
catch-up as any gap does.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cajasync.core.terminal_tables import broker_streams
from cajasync.core.topology import StreamStart

NEXT = "next"


def stream_starts(connection: sa.Connection, streams: Iterable[str]) -> dict[str, StreamStart]:
    """Where to read each of `streams` from: after its stored offset, else from the moment
    it was first read, else from now on (that moment stored); in the caller's transaction."""
    wanted = list(streams)
    rows = connection.execute(
        sa.select(broker_streams.c.stream, broker_streams.c.offset, broker_streams.c.since).where(
            broker_streams.c.stream.in_(wanted)
        )
    ).all()
    known = {row.stream: row for row in rows}
    starts: dict[str, StreamStart] = {}
    now = time.time()
    for stream in wanted:
        row = known.get(stream)
        if row is None:
            starts[stream] = NEXT
            connection.execute(
                broker_streams.insert().values(stream=stream, since=now, updated_at=now)
            )
        elif row.offset is not None:
            starts[stream] = row.offset + 1
        else:
            starts[stream] = dt.datetime.fromtimestamp(row.since, dt.UTC)  # pika sends its second
    return starts


def save_offsets(connection: sa.Connection, offsets: dict[str, int]) -> None:
    """Store the offset of the last event applied per stream (never moving one back)."""
    if not offsets:
        return
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    insert = module.insert(broker_streams)
    statement = insert.on_conflict_do_update(
        index_elements=[broker_streams.c.stream],
        set_={"offset": insert.excluded.offset, "updated_at": insert.excluded.updated_at},
        where=sa.or_(
            broker_streams.c.offset.is_(None), insert.excluded.offset > broker_streams.c.offset
        ),
    )
    now = time.time()
    rows = [{"stream": s, "offset": o, "since": now, "updated_at": now} for s, o in offsets.items()]
    connection.execute(statement, rows)


def stored_offsets(connection: sa.Connection) -> dict[str, int]:
    """Every stream's stored offset, of those read from (for status and tests)."""
    rows = connection.execute(
        sa.select(broker_streams.c.stream, broker_streams.c.offset).where(
            broker_streams.c.offset.is_not(None)
        )
    )
    return {row.stream: row.offset for row in rows}
