"""Messages of the down flow: change events, snapshot pages, images, and the requests for them.

A *stream* is a topic within a scope: `productos:all`, `stock:loc.L1`, `talonarios:pos.PV1`,
`mesas:term.T001`; its events carry a contiguous `seq`. Change events are published to
`cajasync.down` with routing key `chg.<topic>.<scope>`; replies to a terminal's requests go
to `t.<terminal>`. Requests go up to `cajasync.up` as `req.<terminal>.<kind>`.

One request is about the up flow: a till set up again asks where its seqs continue
(`HighWaterRequest`, answered by one `HighWaterMark`).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from schemas.envelope import TerminalId
from schemas.records import Key, Record, Sha256

Stream = Annotated[
    str, msgspec.Meta(pattern=r"^[a-z-]+:(all|(loc|pos|term)\.[A-Za-z0-9_-]{1,32})\Z")
]


def stream_name(topic: str, scope: str) -> str:
    return f"{topic}:{scope}"


def split_stream(stream: str) -> tuple[str, str]:
    topic, scope = stream.split(":", 1)
    return topic, scope


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One record changed: its new version, or a tombstone when `record` is None."""

    stream: Stream
    seq: Annotated[int, msgspec.Meta(ge=1)]
    topic: str
    key: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    record: Record | None = None  # None: deleted

    @property
    def deleted(self) -> bool:
        return self.record is None


class ChangeEvent(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="change", omit_defaults=True
):
    """Live change events of one stream, in seq order (usually one).

    `heads` maps streams to their head seq as the server published them: every change of
    the stream up to that seq went out before this message, so a terminal whose position
    is below it lost the last ones and asks for a catch-up even when nothing changes any
    more. The feed relay sends them periodically as events without changes, one per scope
    (outbox/feed_relay.py). A terminal that predates the field decodes such a message as
    an empty change event and applies nothing (msgspec ignores unknown fields); an event
    without heads encodes as it always did (`omit_defaults`).
    """

    changes: list[Change]
    heads: dict[Stream, Annotated[int, msgspec.Meta(ge=0)]] = {}


class SnapshotPage(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="page"):
    """A page of current records of one stream, answering a snapshot or refresh request.

    Tombstones appear only in refreshes (a record deleted since the terminal's position).
    """

    request_id: str
    stream: Stream
    changes: list[Change]


class RawChange(msgspec.Struct, frozen=True, kw_only=True):
    """A `Change` as a terminal receives it in a snapshot page: the record left encoded.

    Same wire format as `Change`; a bootstrap checks each record (decoded, against the
    record rules) and stores its bytes as they came instead of encoding it again.
    """

    stream: Stream
    seq: Annotated[int, msgspec.Meta(ge=1)]
    topic: str
    key: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    record: msgspec.Raw  # msgpack nil (b"\xc0") for a tombstone

    @property
    def deleted(self) -> bool:
        return bytes(self.record) == NIL


NIL = b"\xc0"  # msgpack nil


class RawSnapshotPage(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="page"):
    """`SnapshotPage` as the terminal decodes it (see RawChange)."""

    request_id: str
    stream: Stream
    changes: list[RawChange]


class SnapshotDone(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="done"):
    """Every page of a request was sent; each stream's high-water seq at snapshot time.

    Live events at or below a stream's high-water are already in the snapshot.
    """

    request_id: str
    high_water: dict[str, int]
    records: int
    images: list[Sha256] = []  # images the pages refer to (when images were asked for)
    # Streams sent whole (every live record, by key): the terminal removes what it holds of
    # them that the pages did not list, unless a live change newer than the high-water wrote it.
    whole: list[str] = []
    missing_keys: list[str] = []  # keys asked for (SnapshotRequest.keys) the server lacks
    # Streams whose catch-up this refresh answers: their change log was compacted past the
    # position asked (outbox/compaction.py), so the records changed since it came instead.
    # A till that predates the field applies the pages and high-water all the same.
    compacted: list[str] = []


CATCH_UP_REFRESH = "catch-up-"  # request_id prefix of a refresh answering a catch-up


class ImageData(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="image"):
    request_id: str
    sha256: Sha256
    data: bytes


class ImagesDone(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="images-done"):
    request_id: str
    sent: int
    missing: list[Sha256] = []  # asked for but unknown to the server


MAX_KEYS = 10_000  # keys one snapshot request may name


class SnapshotRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="snapshot"):
    """ "Obtener datos" / "Actualizar Datos" for some topics of a terminal.

    `since` maps a stream to the terminal's position: only what changed after it is sent
    (a refresh); a stream absent from `since` gets a full snapshot.

    `keys` (when not empty) asks for those records only, whatever the positions: the
    answer moves no position (its `SnapshotDone` has no high-water) and lists the keys the
    server does not hold. `from_location` asks for another location's stock (topics of
    scope `loc`) instead of the till's own: its `loc.<from_location>` stream only, never
    followed live (inbox/entitlement.py says who may ask).
    """

    terminal: TerminalId
    location: TerminalId
    pos: TerminalId
    terminal_kind: str
    request_id: str
    topics: list[str]
    since: dict[str, int] = {}
    images: bool = False
    combo_products: bool = False  # "sincronizar los productos del combo"
    keys: Annotated[list[Key], msgspec.Meta(max_length=MAX_KEYS)] = []
    from_location: TerminalId | None = None


class CatchUpRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="catch-up"):
    """A terminal saw a gap in a stream: send its events again from `from_seq`."""

    terminal: TerminalId
    location: TerminalId
    pos: TerminalId
    terminal_kind: str
    stream: Stream
    from_seq: Annotated[int, msgspec.Meta(ge=1)]


class ImageRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="images"):
    """The images a terminal lacks (by content address)."""

    terminal: TerminalId
    request_id: str
    hashes: list[Sha256]


# -- where a rebuilt or restored till continues ---------------------------------------------

MAX_SEQ = 2**31 - 1  # the server stores seqs in 32-bit columns
HeldSeq = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
MAX_ROWS = 100_000  # unacknowledged rows one high-water request may ask about


class OutboxRef(msgspec.Struct, frozen=True, kw_only=True):
    """One outbox row by seq and identity: `op_id` is an operation's id, or on the server
    side the key of a recorded rejection (`bad:<terminal>:<seq>`, version 0)."""

    seq: HeldSeq
    op_id: Annotated[str, msgspec.Meta(max_length=64)]
    version: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]


class HighWaterRequest(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="high-water"
):
    """A till set up again (`terminal init`) or restored (`terminal recover`) asks where its
    seqs continue.

    Answering registers `incarnation` as the terminal's current database; it continues
    after the highest seq the server holds, or after `last_seq` (the till's own) if that
    is higher. `rows` are the till's unacknowledged rows: the answer says which of their
    seqs and identities the server already holds.
    """

    terminal: TerminalId
    request_id: str
    incarnation: uuid.UUID
    last_seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)] = 0
    rows: Annotated[list[OutboxRef], msgspec.Meta(max_length=MAX_ROWS)] = []


class HighWaterMark(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="high-water-mark"
):
    """The server's answer to a HighWaterRequest, to `t.<terminal>`.

    `max_seq`, `contiguous_seq` and `held` (seqs held, rejections included) describe what
    the server holds of the terminal; `incarnation` is its current database after the
    request (the asker's, unless another registered after it) and `start_seq` the seq it
    continues after. `held_rows` lists what the server holds at the asked seqs and under
    the asked identities.
    """

    request_id: str
    terminal: TerminalId
    max_seq: int
    contiguous_seq: int
    held: int
    incarnation: uuid.UUID
    start_seq: int
    held_rows: list[OutboxRef] = []
