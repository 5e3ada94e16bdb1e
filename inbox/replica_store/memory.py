"""The replica in plain Python: the same rules without a database, for unit tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from inbox import replica as rules
from schemas.feed import Change, ImageData
from schemas.records import Record

_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)


class _Held(NamedTuple):
    version: int
    body: bytes | None  # None: a tombstone
    scope: str | None


class MemoryReplicaStore:
    """Replica rows by (topic, key) and images by sha256, in dicts."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], _Held] = {}
        self._images: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def apply(self, changes: Sequence[Change], now: float) -> None:
        """Write every change newer than what is held (a delete as a tombstone)."""
        with self._lock:
            for topic, key, version, _, body, _, _, scope, _ in rules.rows_of(changes, now):
                held = self._rows.get((topic, key))
                if held is None or version > held.version:
                    self._rows[topic, key] = _Held(version, body, scope)

    def store_image(self, image: ImageData, now: float) -> bool:
        """Store an image once by its sha256; False when the bytes do not match it."""
        if not rules.image_matches(image):
            return False
        with self._lock:
            self._images.setdefault(image.sha256, image.data)
        return True

    def record(self, topic: str, key: str) -> Record | None:
        """The live record of `topic` with `key`, or None."""
        found = self.entry(topic, key)
        return None if found is None else found[1]

    def entry(self, topic: str, key: str) -> tuple[str | None, Record] | None:
        """The scope and live record of `topic` with `key`, or None."""
        with self._lock:
            row = self._rows.get((topic, key))
        return None if row is None or row.body is None else (row.scope, _decoder.decode(row.body))

    def records(
        self, topic: str, limit: int | None = None, scope: str | None = None
    ) -> list[Record]:
        """Up to `limit` live records of `topic` (of `scope` when given), by key."""
        return [record for _scope, record in self.entries(topic, limit, scope)]

    def entries(
        self, topic: str, limit: int | None = None, scope: str | None = None, offset: int = 0
    ) -> list[tuple[str | None, Record]]:
        """`records` with the scope each came by, from the `offset`-th on (a page)."""
        with self._lock:
            rows = [row for (of, _), row in sorted(self._rows.items()) if of == topic]
        live = [
            (row.scope, _decoder.decode(row.body))
            for row in rows
            if row.body is not None and (scope is None or row.scope == scope)
        ]
        return live[offset:] if limit is None else live[offset : offset + limit]

    def counts(self, topic: str | None = None, scope: str | None = None) -> dict[str, int]:
        """Live records per topic holding any (only `topic`, only `scope` when given)."""
        counts: dict[str, int] = {}
        with self._lock:
            for (of, _), row in self._rows.items():
                if row.body is None or (scope is not None and row.scope != scope):
                    continue
                if topic is None or of == topic:
                    counts[of] = counts.get(of, 0) + 1
        return counts

    def image(self, sha256: str) -> bytes | None:
        """The image stored under `sha256`, or None."""
        with self._lock:
            return self._images.get(sha256)

    def held_images(self, hashes: Sequence[str]) -> set[str]:
        """Which of `hashes` the replica holds the image of."""
        with self._lock:
            return {sha256 for sha256 in hashes if sha256 in self._images}

    def versions(self, topic: str, prefix: str = "") -> list[tuple[str, int]]:
        """(key, version) of live records of `topic` with keys starting with `prefix`."""
        with self._lock:
            return sorted(
                (key, row.version)
                for (of, key), row in self._rows.items()
                if of == topic and row.body is not None and key.startswith(prefix)
            )

    def tombstone(self, topic: str, keys: Sequence[str], now: float) -> int:
        """Delete live records of `topic` among `keys`, keeping their versions."""
        deleted = 0
        with self._lock:
            for key in set(keys):
                row = self._rows.get((topic, key))
                if row is not None and row.body is not None:
                    self._rows[topic, key] = _Held(row.version, None, row.scope)
                    deleted += 1
        return deleted
