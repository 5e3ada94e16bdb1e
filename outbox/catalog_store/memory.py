"""The server catalog in plain Python: the rules of outbox/catalog.py without a database."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from outbox.catalog import ChangeLog, KeyState, check_records, check_scope
from schemas.feed import Change, split_stream, stream_name
from schemas.records import Record
from schemas.topics import down_topic

_record_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)
_change_decoder: msgspec.msgpack.Decoder[Change] = msgspec.msgpack.Decoder(Change)


class MemoryCatalogStore:
    """Records by (topic, scope, key), the change log, stream heads and images, in dicts."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._changes: list[dict[str, Any]] = []
        self._heads: dict[str, int] = {}
        self._images: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def upsert_many(self, records: Iterable[Record], *, scope: str = "all") -> list[Change]:
        """Create or replace records in `scope`; one change per record, in input order."""
        records = list(records)
        if not records:
            return []
        check_records(records)
        with self._lock:
            log = self._open(sorted({record.topic for record in records}), scope)
            self._load(log, [(record.topic, record.key) for record in records])
            changes = [log.upsert(record) for record in records]
            self._flush(log)
        return changes

    def delete(self, topic: str, key: str, *, scope: str = "all") -> Change | None:
        """Turn a record into a tombstone; None if there is none."""
        topic = down_topic(topic)
        with self._lock:
            log = self._open([topic], scope)
            self._load(log, [(topic, key)])
            change = log.delete(topic, key)
            self._flush(log)
        return change

    def put_images(self, images: Sequence[bytes]) -> list[str]:
        """Store images once each, by content; their sha256s in input order."""
        hashes = [hashlib.sha256(data).hexdigest() for data in images]
        with self._lock:
            for sha, data in zip(hashes, images, strict=True):
                self._images.setdefault(sha, data)
        return hashes

    def get(self, topic: str, key: str, scope: str = "all") -> Record | None:
        """The current record of `key` in `scope`, or None when missing or deleted."""
        with self._lock:
            row = self._records.get((down_topic(topic), scope, key))
        body = None if row is None else row["body"]
        return None if body is None else _record_decoder.decode(body)

    def get_image(self, sha256: str) -> bytes | None:
        """The bytes of a stored image, or None."""
        with self._lock:
            return self._images.get(sha256)

    def heads(self, streams: Sequence[str]) -> dict[str, int]:
        """Head seq of each of `streams` that exists."""
        with self._lock:
            return {stream: self._heads[stream] for stream in streams if stream in self._heads}

    def changes(self, stream: str, *, after_seq: int = 0) -> list[Change]:
        """The change log of `stream` after `after_seq`, in seq order."""
        with self._lock:
            rows = [c for c in self._changes if c["stream"] == stream and c["seq"] > after_seq]
        return [_change_decoder.decode(row["body"]) for row in sorted(rows, key=_seq)]

    def _open(self, topics: list[str], scope: str) -> ChangeLog:
        """`ChangeLog.open` on the dicts: check the scope, read the heads (0 when new)."""
        for topic in topics:
            check_scope(topic, scope)
        streams = [stream_name(topic, scope) for topic in topics]
        heads = {stream: self._heads.get(stream, 0) for stream in streams}
        scopes: dict[str, set[str]] = {topic: {scope} for topic in topics}
        for stream in self._heads:
            topic, other = split_stream(stream)
            scopes.get(topic, set()).add(other)
        return ChangeLog(scope, heads, scopes)

    def _load(self, log: ChangeLog, keys: list[tuple[str, str]]) -> None:
        """`ChangeLog.load` on the dicts: each key's state over every scope of its topic."""
        for topic, key in keys:
            if (topic, key) in log.keys:
                continue
            state = log.keys[topic, key] = KeyState()
            for scope in log.scopes[topic]:
                row = self._records.get((topic, scope, key))
                if row is None:
                    continue
                state.top_version = max(state.top_version, row["version"])
                if not row["deleted"]:
                    state.live_scope, state.live_seq = scope, row["seq"]
                    state.live_body = row["body"]

    def _flush(self, log: ChangeLog) -> None:
        """`ChangeLog.flush` on the dicts."""
        for row in log.records.values():
            self._records[row["topic"], row["scope"], row["key"]] = row
        self._changes.extend(log.changes)
        self._heads.update(log.heads)  # a stream's head exists once a call used it
        log.records, log.changes, log.moved = {}, [], set()


def _seq(row: dict[str, Any]) -> int:
    return int(row["seq"])
