"""The server catalog port: master data in, its change log and heads out.

The rules live once in outbox/catalog.py (`ChangeLog`); every adapter keeps them, and
tests/unit/test_catalog_contract.py (memory) and tests/integration/test_catalog_contract.py
(SQLite, PostgreSQL) check them:

* a change raises the record's version to 1 + the highest it ever had in its topic (a
  version on the input is ignored) and takes the next seq of its stream (topic:scope);
* an upsert equal to the current record is skipped and returns the current change;
* a delete leaves a tombstone (`get` gives None) and None when there is nothing to delete;
* a key lives in one scope of its topic; a topic takes its natural scope or a terminal's;
  an invalid record, a scope broken or a key in another scope refuses the whole call
  (CatalogError) and nothing of it is written;
* images are stored once by content and named by their sha256;
* every database error leaves as a cajasync error (StoreError and its kinds).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from schemas.feed import Change
from schemas.records import Record


class CatalogStore(Protocol):
    """The server catalog as the back office writes it and reads it back."""

    def upsert_many(self, records: Iterable[Record], *, scope: str = "all") -> list[Change]:
        """Create or replace records in `scope`; one change per record, in input order."""
        ...

    def delete(self, topic: str, key: str, *, scope: str = "all") -> Change | None:
        """Turn a record into a tombstone; None if there is none."""
        ...

    def put_images(self, images: Sequence[bytes]) -> list[str]:
        """Store images once each, by content; their sha256s in input order."""
        ...

    def get(self, topic: str, key: str, scope: str = "all") -> Record | None:
        """The current record of `key` in `scope`, or None when missing or deleted."""
        ...

    def get_image(self, sha256: str) -> bytes | None:
        """The bytes of a stored image, or None."""
        ...

    def heads(self, streams: Sequence[str]) -> dict[str, int]:
        """Head seq of each of `streams` that exists."""
        ...

    def changes(self, stream: str, *, after_seq: int = 0) -> list[Change]:
        """The change log of `stream` after `after_seq`, in seq order."""
        ...
