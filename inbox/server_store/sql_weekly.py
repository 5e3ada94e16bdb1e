"""Weekly file chunks in SQL: track current chunks, lock and reassess each touched file.

The file row is locked (SELECT ... FOR UPDATE) before its chunks are read, so when two server
processes commit the last two chunks of a file at once, the second sees both.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import sqlalchemy as sa

from cajasync.core.dialect import Dialect
from cajasync.core.server_tables import PARTIAL, operations, weekly_chunks, weekly_files
from inbox.server_store import weekly
from inbox.server_store.base import WeeklyFile
from schemas.envelope import OpEnvelope
from schemas.ops import WeeklyFileChunk

_chunk_decoder = msgspec.json.Decoder(WeeklyFileChunk)
_KEY = ("terminal", "week", "file_name", "sha256")


def record_chunks(
    connection: sa.Connection,
    dialect: Dialect,
    current: list[OpEnvelope],
    now: dt.datetime,
) -> None:
    """Track the chunks among newly current operations and reassess the files they touch."""
    _forget_replaced(connection, current)
    chunks = [(env, env.op) for env in current if isinstance(env.op, WeeklyFileChunk)]
    if not chunks:
        return
    values = [_chunk_values(env, chunk) for env, chunk in chunks]
    statement = dialect.insert(weekly_chunks)
    statement = statement.on_conflict_do_update(
        index_elements=[weekly_chunks.c.op_id],
        set_={name: statement.excluded[name] for name in values[0] if name != "op_id"},
    )
    connection.execute(statement, values)
    for key in sorted({weekly.key_of(env.terminal, chunk) for env, chunk in chunks}):
        _reassess(connection, dialect, key, now)


def read_files(connection: sa.Connection) -> list[WeeklyFile]:
    """Every weekly file row, by terminal, week and name."""
    rows = connection.execute(
        sa.select(weekly_files).order_by(*(weekly_files.c[name] for name in _KEY))
    ).all()
    return [
        WeeklyFile(
            terminal=r.terminal,
            week=r.week,
            file_name=r.file_name,
            sha256=r.sha256,
            size=r.size,
            chunk_count=r.chunk_count,
            chunks_held=r.chunks_held,
            status=r.status,
            reason=r.reason,
            content=r.content,
        )
        for r in rows
    ]


def _forget_replaced(connection: sa.Connection, current: list[OpEnvelope]) -> None:
    """A chunk whose operation became something else is no longer part of its file."""
    replaced = [
        str(env.op_id)
        for env in current
        if env.version > 1 and not isinstance(env.op, WeeklyFileChunk)
    ]
    if replaced:
        connection.execute(weekly_chunks.delete().where(weekly_chunks.c.op_id.in_(replaced)))


def _chunk_values(envelope: OpEnvelope, chunk: WeeklyFileChunk) -> dict[str, object]:
    return {
        "op_id": str(envelope.op_id),
        "terminal": envelope.terminal,
        "week": chunk.week,
        "file_name": chunk.file_name,
        "sha256": chunk.sha256,
        "seq": envelope.seq,
        "chunk_index": chunk.chunk_index,
        "chunk_count": chunk.chunk_count,
        "size": chunk.size,
    }


def _reassess(
    connection: sa.Connection, dialect: Dialect, key: weekly.FileKey, now: dt.datetime
) -> None:
    where = [weekly_files.c[name] == value for name, value in zip(_KEY, key, strict=True)]
    placeholder = {
        **key._asdict(),
        "size": 0,
        "chunk_count": 0,
        "chunks_held": 0,
        "status": PARTIAL,
        "updated_at": now,
    }
    connection.execute(dialect.insert(weekly_files).on_conflict_do_nothing(), [placeholder])
    connection.execute(sa.select(weekly_files.c.status).where(*where).with_for_update())
    file = weekly.assess(key, _parts(connection, key), lambda picked: _load(connection, picked))
    connection.execute(
        weekly_files.update()
        .where(*where)
        .values(
            size=file.size,
            chunk_count=file.chunk_count,
            chunks_held=file.chunks_held,
            status=file.status,
            reason=file.reason,
            content=file.content,
            updated_at=now,
        )
    )


def _parts(connection: sa.Connection, key: weekly.FileKey) -> list[weekly.ChunkMeta]:
    where = [weekly_chunks.c[name] == value for name, value in zip(_KEY, key, strict=True)]
    rows = connection.execute(
        sa.select(
            weekly_chunks.c.op_id,
            weekly_chunks.c.seq,
            weekly_chunks.c.chunk_index,
            weekly_chunks.c.chunk_count,
            weekly_chunks.c.size,
        ).where(*where)
    ).all()
    return [weekly.ChunkMeta(*row) for row in rows]


def _load(connection: sa.Connection, picked: list[weekly.ChunkMeta]) -> list[bytes]:
    payloads = dict(
        connection.execute(
            sa.select(operations.c.op_id, operations.c.payload).where(
                operations.c.op_id.in_([meta.op_id for meta in picked])
            )
        ).all()
    )
    return [_chunk_decoder.decode(payloads[meta.op_id]).data for meta in picked]
