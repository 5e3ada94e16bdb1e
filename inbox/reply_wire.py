"""Reply bodies built from stored msgpack without decoding it again.

The catalog stores each record (and each change-log entry) already encoded. Mirrors of
`SnapshotPage`, `Change` and `ChangeEvent` whose record fields are `msgspec.Raw` put those
bytes on the wire as they are: the result is byte for byte what encoding the schema
Structs gives (a test holds them together), at a tenth of the cost (measured: 0.03 s
instead of 0.34 s for 100,000 products). The wire schema is unchanged; these Structs
never decode anything.
"""

from __future__ import annotations

import msgspec

from schemas.codec import encode
from schemas.feed import ChangeEvent, SnapshotPage

_PAGE_TAG = SnapshotPage.__struct_config__.tag
_EVENT_TAG = ChangeEvent.__struct_config__.tag


class StoredChange(msgspec.Struct, frozen=True, kw_only=True):
    """`schemas.feed.Change` (same fields, same order) with the record as stored bytes."""

    stream: str
    seq: int
    topic: str
    key: str
    version: int
    record: msgspec.Raw | None = None


class _RawPage(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag=_PAGE_TAG):
    request_id: str
    stream: str
    changes: list[StoredChange]


class _RawEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag=_EVENT_TAG):
    changes: list[msgspec.Raw]


def stored_change(
    stream: str, topic: str, key: str, *, seq: int, version: int, body: bytes | None
) -> StoredChange:
    """A change carrying a stored record body (None: a tombstone)."""
    record = None if body is None else msgspec.Raw(body)
    return StoredChange(
        stream=stream, seq=seq, topic=topic, key=key, version=version, record=record
    )


def page_body(request_id: str, stream: str, changes: list[StoredChange]) -> bytes:
    """An encoded `SnapshotPage`."""
    return encode(_RawPage(request_id=request_id, stream=stream, changes=changes))


def event_body(changes: list[bytes]) -> bytes:
    """An encoded `ChangeEvent` of stored, encoded `Change`s (change-log bodies)."""
    return encode(_RawEvent(changes=[msgspec.Raw(change) for change in changes]))
