"""Reassembling weekly fiscal files from their chunks, the same way in every adapter.

A file is identified by terminal, week, file name and the sha256 its chunks announce; it is
assessed from the current version of each of its chunks. When the same chunk index is held
twice (the file was recorded again with the same content), the later seq wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

from inbox.server_store.base import FileStatus, WeeklyFile
from schemas.ops import WeeklyFileChunk


class FileKey(NamedTuple):
    """What identifies one weekly file."""

    terminal: str
    week: str
    file_name: str
    sha256: str


class ChunkMeta(NamedTuple):
    """One held chunk of a file, without its data."""

    op_id: str
    seq: int
    chunk_index: int
    chunk_count: int
    size: int


def key_of(terminal: str, chunk: WeeklyFileChunk) -> FileKey:
    """The file a chunk belongs to."""
    return FileKey(terminal, chunk.week, chunk.file_name, chunk.sha256)


def meta_of(op_id: str, seq: int, chunk: WeeklyFileChunk) -> ChunkMeta:
    """A chunk's metadata."""
    return ChunkMeta(op_id, seq, chunk.chunk_index, chunk.chunk_count, chunk.size)


def chosen(parts: Sequence[ChunkMeta]) -> list[ChunkMeta]:
    """One chunk per index (the latest seq), ordered by index."""
    best: dict[int, ChunkMeta] = {}
    for part in parts:
        held = best.get(part.chunk_index)
        if held is None or held.seq < part.seq:
            best[part.chunk_index] = part
    return [best[index] for index in sorted(best)]


def assess(
    key: FileKey,
    parts: Sequence[ChunkMeta],
    load: Callable[[list[ChunkMeta]], list[bytes]],
) -> WeeklyFile:
    """The state of a file; `load` fetches the data of the chunks, in order, once all are held."""
    picked = chosen(parts)
    first = parts[0]
    problem = _metadata_problem(parts)
    if problem is not None:
        return _file(key, first, len(picked), "corrupt", problem)
    if len(picked) < first.chunk_count:
        return _file(key, first, len(picked), "partial")
    content = b"".join(load(picked))
    return _checked(key, first, len(picked), content)


def _metadata_problem(parts: Sequence[ChunkMeta]) -> str | None:
    counts = sorted({part.chunk_count for part in parts})
    if len(counts) > 1:
        return f"chunks disagree on the chunk count: {counts}"
    sizes = sorted({part.size for part in parts})
    if len(sizes) > 1:
        return f"chunks disagree on the file size: {sizes}"
    return None


def _checked(key: FileKey, first: ChunkMeta, held: int, content: bytes) -> WeeklyFile:
    if len(content) != first.size:
        reason = f"reassembled {len(content)} bytes, the chunks announce {first.size}"
        return _file(key, first, held, "corrupt", reason, content)
    digest = hashlib.sha256(content).hexdigest()
    if digest != key.sha256:
        reason = f"reassembled sha256 {digest} differs from the announced {key.sha256}"
        return _file(key, first, held, "corrupt", reason, content)
    return _file(key, first, held, "complete", "", content)


def _file(
    key: FileKey,
    first: ChunkMeta,
    held: int,
    status: FileStatus,
    reason: str = "",
    content: bytes | None = None,
) -> WeeklyFile:
    return WeeklyFile(
        terminal=key.terminal,
        week=key.week,
        file_name=key.file_name,
        sha256=key.sha256,
        size=first.size,
        chunk_count=first.chunk_count,
        chunks_held=held,
        status=status,
        reason=reason,
        content=content,
    )
