"""The replica port: the terminal's copy of server master data, as the POS reads it.

Rules every adapter keeps (tests/unit/test_replica_contract.py on memory,
tests/integration/test_replica_contract.py on SQLite check them):

* `apply` writes a change only when its version is newer than the one held, so changes
  may come twice or out of order; a delete stays as a tombstone with its version, so an
  older upsert never brings the record back; a record that breaks the record rules or is
  not of its change's topic is refused and the replica keeps what it had;
* a record is held under its change's key and version, whatever the record says;
* reads see live records only: `record` by topic and key, `records` of a topic by key,
  `counts` per topic holding any, `versions` of a topic by key, `entries` a page of them
  from an offset; `image` by sha256, stored once, only when it matches (`held_images`:
  which of some are held);
* `tombstone` (a prune: records the server no longer has) deletes live records keeping
  their versions, and moves no stream position;
* every record keeps the scope of the stream its change came by (`entry`, `entries`:
  which location a stock record belongs to); `records`, `entries` and `counts` read one
  scope when given one;
* every database error leaves as a cajasync error (NotInitialised on a database never set
  up with `cajasync terminal init`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from schemas.feed import Change, ImageData
from schemas.records import Record


class ReplicaStore(Protocol):
    """The replica: change events and images in, live records out."""

    def apply(self, changes: Sequence[Change], now: float) -> None:
        """Write every change newer than what is held (a delete as a tombstone)."""
        ...

    def store_image(self, image: ImageData, now: float) -> bool:
        """Store an image once by its sha256; False when the bytes do not match it."""
        ...

    def record(self, topic: str, key: str) -> Record | None:
        """The live record of `topic` with `key`, or None."""
        ...

    def entry(self, topic: str, key: str) -> tuple[str | None, Record] | None:
        """The scope and live record of `topic` with `key`, or None."""
        ...

    def records(
        self, topic: str, limit: int | None = None, scope: str | None = None
    ) -> list[Record]:
        """Up to `limit` live records of `topic` (of `scope` when given), by key."""
        ...

    def entries(
        self, topic: str, limit: int | None = None, scope: str | None = None, offset: int = 0
    ) -> list[tuple[str | None, Record]]:
        """`records` with the scope each came by, from the `offset`-th on (a page)."""
        ...

    def counts(self, topic: str | None = None, scope: str | None = None) -> dict[str, int]:
        """Live records per topic holding any (only `topic`, only `scope` when given)."""
        ...

    def image(self, sha256: str) -> bytes | None:
        """The image stored under `sha256`, or None."""
        ...

    def held_images(self, hashes: Sequence[str]) -> set[str]:
        """Which of `hashes` the replica holds the image of."""
        ...

    def versions(self, topic: str, prefix: str = "") -> list[tuple[str, int]]:
        """(key, version) of every live record of `topic` whose key starts with `prefix`,
        by key: what compare counts and diff digests."""
        ...

    def tombstone(self, topic: str, keys: Sequence[str], now: float) -> int:
        """Delete live records of `topic` among `keys`, keeping each one's version (so a
        later version from the server still applies); the number deleted."""
        ...
