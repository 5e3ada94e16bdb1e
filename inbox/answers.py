"""What the server answers to each terminal request, as encoded reply bodies.

`plan(request, routing_key, user_id)` checks a request before anything is sent (who sent
it, which topics and streams it names) and raises InvalidMessage for one to dead-letter.
`replies(plan, reader, tally)` then yields the reply bodies in order, reading through a
`CatalogReader` (one consistent snapshot), so pages are produced as they are sent and a
100,000-record snapshot never sits in memory. A high-water request is the exception: it
is answered by the inbox store, which registers the till's new incarnation
(`high_water_reply`). A question (schemas/questions.py) is answered by inbox/questions.py
to the asker's reply-to address.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from cajasync.errors import InvalidMessage
from inbox.catalog_reads import RecordRow
from inbox.entitlement import Requester, check_sender, check_stream, check_topic, streams_for
from inbox.questions import QuestionPlan, plan_question
from inbox.registry import Lookup, as_registered
from inbox.reply_wire import StoredChange, event_body, page_body, stored_change
from inbox.server_store.incarnations import IncarnationStore
from schemas.codec import decode_request, encode
from schemas.envelope import ReplayReport
from schemas.feed import (
    CATCH_UP_REFRESH,
    CatchUpRequest,
    HighWaterRequest,
    ImageData,
    ImageRequest,
    ImagesDone,
    SnapshotDone,
    SnapshotRequest,
    split_stream,
)
from schemas.questions import (
    CountsQuestion,
    DigestQuestion,
    EntriesQuestion,
    HeldQuestion,
    RecordQuestion,
)
from schemas.records import Combo, Record, for_terminal
from schemas.status import TerminalStatus
from schemas.topics import TABLE_TOPICS

PAGE_SIZE = 1000  # records per SnapshotPage
EVENT_SIZE = 500  # changes per catch-up ChangeEvent
IMAGE_CHUNK = 50  # images read per query
PRODUCTS = "productos"
COMBOS = "combos"

_combo_decoder = msgspec.msgpack.Decoder(Combo)
_record_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)


class CatalogReader(Protocol):
    """The catalog reads an answer needs, all within one snapshot."""

    def heads(self, streams: Sequence[str]) -> dict[str, int]:
        """Head seq of each existing stream among `streams`."""

    def compacted_to(self, stream: str) -> int:
        """The seq `stream`'s change log was compacted to (0: never)."""

    def current(self, stream: str, *, after_key: str | None, limit: int) -> list[RecordRow]:
        """Live records of `stream` after `after_key`, by key."""

    def changed(self, stream: str, *, after_seq: int, limit: int) -> list[RecordRow]:
        """Records (tombstones included) of `stream` changed after `after_seq`, by seq."""

    def by_keys(self, stream: str, keys: Sequence[str]) -> list[RecordRow]:
        """Live records of `stream` among `keys`."""

    def changes(
        self, stream: str, *, from_seq: int, to_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """(seq, encoded Change) of `stream` in `from_seq..to_seq`, by seq."""

    def images(self, hashes: Sequence[str]) -> dict[str, bytes]:
        """Stored images among `hashes`."""


@dataclass(slots=True)
class Tally:
    """What the replies of one request carried."""

    records: int = 0
    changes: int = 0
    images: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotPlan:
    """A checked snapshot or refresh: the streams to send, in order, and their positions.

    With `keys`, only those records of every stream are sent, and no high-water.
    """

    request: SnapshotRequest
    streams: list[str]
    since: dict[str, int]
    combo_streams: list[str]  # product streams to look combo items up in (empty: none)
    keys: list[str] = field(default_factory=list)
    compacted: list[str] = field(default_factory=list)  # a refresh answering their catch-up


@dataclass(frozen=True, slots=True)
class CatchUpPlan:
    """A checked catch-up request."""

    request: CatchUpRequest


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """A checked image request, its hashes without repeats."""

    request: ImageRequest
    hashes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HighWaterPlan:
    """A checked high-water request (a till set up again asks where its seqs continue)."""

    request: HighWaterRequest


@dataclass(frozen=True, slots=True)
class ReplayReportPlan:
    """A till's answer to ReplaySales: the sale numbers it has none for (recorded by
    inbox/zreconcile.py; nothing is sent back)."""

    request: ReplayReport


@dataclass(frozen=True, slots=True)
class StatusPlan:
    """A till's status: kept as its latest (inbox/status.py), answered by nothing."""

    request: TerminalStatus


CatalogPlan = SnapshotPlan | CatchUpPlan | ImagePlan
Plan = CatalogPlan | HighWaterPlan | ReplayReportPlan | QuestionPlan | StatusPlan


def plan(
    body: bytes, routing_key: str, user_id: str | None, registry: Lookup | None = None
) -> Plan:
    """Decode and check a request; InvalidMessage (with the reason) when it must not be
    answered. With a `registry`, a terminal not let in is refused and a registered one's
    location, pos and kind are the registry's, whatever the request says."""
    request = decode_request(body)
    check_sender(routing_key, user_id, request.terminal)
    if registry is not None:
        registration = registry.check_request(request.terminal, user_id)
        if isinstance(
            request,
            SnapshotRequest
            | CatchUpRequest
            | CountsQuestion
            | HeldQuestion
            | DigestQuestion
            | EntriesQuestion
            | RecordQuestion,
        ):  # what it receives and is compared against follows from where the registry says
            request = as_registered(request, registration)
    match request:
        case SnapshotRequest():
            return plan_snapshot(request)
        case CatchUpRequest():
            if not check_stream(Requester.of(request), request.stream):
                raise InvalidMessage(
                    f"stream {request.stream!r} is not offered to {request.terminal_kind} "
                    f"terminal {request.terminal}"
                )
            return CatchUpPlan(request)
        case ImageRequest():
            return ImagePlan(request, list(dict.fromkeys(request.hashes)))
        case HighWaterRequest():
            return HighWaterPlan(request)
        case ReplayReport():
            return ReplayReportPlan(request)
        case (
            CountsQuestion()
            | HeldQuestion()
            | DigestQuestion()
            | EntriesQuestion()
            | RecordQuestion()
        ):
            return plan_question(request)
        case TerminalStatus():
            return StatusPlan(request)


def plan_snapshot(request: SnapshotRequest) -> SnapshotPlan:
    """The streams a snapshot request covers; unknown topics and foreign streams raise."""
    requester = Requester.of(request)
    location = request.from_location
    topics = list(dict.fromkeys(request.topics))
    for topic in topics:
        check_topic(topic)
    streams = [stream for topic in topics for stream in streams_for(requester, topic, location)]
    since: dict[str, int] = {}
    for stream, position in request.since.items():
        if check_stream(requester, stream, location) and stream in streams:
            if position < 0:
                raise InvalidMessage(f"position {position} of stream {stream!r} is negative")
            since[stream] = position
    combos = request.combo_products and COMBOS in topics and PRODUCTS not in topics
    combo_streams = streams_for(requester, PRODUCTS) if combos else []
    keys = list(dict.fromkeys(request.keys))
    return SnapshotPlan(request, streams, since, combo_streams, keys)


def high_water_reply(plan: HighWaterPlan, store: IncarnationStore) -> bytes:
    """Register the till's new incarnation and say where it continues (one reply)."""
    return encode(store.register(plan.request))


def replies(plan: CatalogPlan, reader: CatalogReader, tally: Tally) -> Iterator[bytes]:
    """The reply bodies of a checked request, in the order they must be sent."""
    match plan:
        case SnapshotPlan():
            yield from snapshot_replies(plan, reader, tally)
        case CatchUpPlan():
            yield from catch_up_replies(plan.request, reader, tally)
        case ImagePlan():
            yield from image_replies(plan, reader, tally)


# -- snapshots and refreshes ----------------------------------------------------------------


@dataclass(slots=True)
class _Sent:
    """What the pages of one snapshot carried so far."""

    records: int = 0
    images: set[str] = field(default_factory=set)
    combo_items: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)  # keys sent as live records


def snapshot_replies(plan: SnapshotPlan, reader: CatalogReader, tally: Tally) -> Iterator[bytes]:
    """Pages of every stream (high water read first), combo products, then SnapshotDone.

    A request naming keys gets those records of every stream, no high-water (a position
    moved to it would skip the other keys' changes) and the keys the server lacks.
    """
    request = plan.request
    heads = reader.heads(plan.streams)
    sent = _Sent()
    for stream in plan.streams:
        if stream in heads:
            yield from _stream_pages(plan, stream, reader, sent)
    for stream in plan.combo_streams:
        yield from _combo_product_pages(plan, stream, reader, sent)
    if plan.keys:
        high_water: dict[str, int] = {}
        whole: list[str] = []
    else:
        high_water = {stream: heads[stream] for stream in plan.streams if stream in heads}
        whole = [stream for stream in plan.streams if stream not in plan.since]
    images = sorted(sent.images) if request.images else []
    done = SnapshotDone(
        request_id=request.request_id,
        high_water=high_water,
        records=sent.records,
        images=images,
        whole=whole,
        missing_keys=[key for key in plan.keys if key not in sent.keys],
        compacted=plan.compacted,
    )
    tally.records += sent.records
    yield encode(done)


def _stream_pages(
    plan: SnapshotPlan, stream: str, reader: CatalogReader, sent: _Sent
) -> Iterator[bytes]:
    """Asked keys, a full snapshot (live records by key) or a refresh (changes since, by seq)."""
    since = plan.since.get(stream)
    if plan.keys:
        rows = _keyed_rows(reader, stream, plan.keys)
    elif since is None:
        rows = _current_rows(reader, stream)
    else:
        rows = _changed_rows(reader, stream, since)
    for page in rows:
        if plan.combo_streams and split_stream(stream)[0] == COMBOS:
            sent.combo_items.update(_combo_items(page))
        yield _page(plan, stream, page, sent, whole=since is None and not plan.keys)


def _keyed_rows(reader: CatalogReader, stream: str, keys: list[str]) -> Iterator[list[RecordRow]]:
    rows = reader.by_keys(stream, keys)
    for start in range(0, len(rows), PAGE_SIZE):
        yield rows[start : start + PAGE_SIZE]


def _current_rows(reader: CatalogReader, stream: str) -> Iterator[list[RecordRow]]:
    after: str | None = None
    while page := reader.current(stream, after_key=after, limit=PAGE_SIZE):
        yield page
        after = page[-1].key


def _changed_rows(reader: CatalogReader, stream: str, since: int) -> Iterator[list[RecordRow]]:
    after = since
    while page := reader.changed(stream, after_seq=after, limit=PAGE_SIZE):
        yield page
        after = page[-1].seq


def _combo_product_pages(
    plan: SnapshotPlan, stream: str, reader: CatalogReader, sent: _Sent
) -> Iterator[bytes]:
    """The products the sent combos are made of, from one product stream."""
    rows = reader.by_keys(stream, sorted(sent.combo_items))
    for start in range(0, len(rows), PAGE_SIZE):
        yield _page(plan, stream, rows[start : start + PAGE_SIZE], sent, whole=False)


def _combo_items(rows: list[RecordRow]) -> set[str]:
    return {
        item.product
        for row in rows
        if row.body is not None
        for item in _combo_decoder.decode(row.body).items
    }


def _page(
    plan: SnapshotPlan, stream: str, rows: list[RecordRow], sent: _Sent, *, whole: bool
) -> bytes:
    """One SnapshotPage; counts its records and the images they refer to.

    A record the terminal must not hold (a room for a restaurant, schemas.records
    `for_terminal`) is left out of a whole stream and sent as a tombstone otherwise, so a
    record that changed kind leaves the terminal that held it.
    """
    topic = split_stream(stream)[0]
    kind = plan.request.terminal_kind
    changes: list[StoredChange] = []
    for row in rows:
        body = row.body
        if body is not None and topic in TABLE_TOPICS and not _fits(body, kind):
            if whole:
                continue
            body = None
        changes.append(
            stored_change(stream, topic, row.key, seq=row.seq, version=row.version, body=body)
        )
        if body is not None:
            sent.keys.add(row.key)
            if row.image is not None:
                sent.images.add(row.image)
    sent.records += len(changes)
    return page_body(plan.request.request_id, stream, changes)


def _fits(body: bytes, terminal_kind: str) -> bool:
    try:
        return for_terminal(_record_decoder.decode(body), terminal_kind)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return True  # not ours to judge here: the terminal refuses what is no record


# -- catch-up and images -----------------------------------------------------------------


def catch_up_replies(
    request: CatchUpRequest, reader: CatalogReader, tally: Tally
) -> Iterator[bytes]:
    """The change log of one stream from `from_seq` to its head, in ChangeEvents; or, when
    the log was compacted past `from_seq`, a refresh of the stream instead."""
    if request.from_seq <= reader.compacted_to(request.stream):
        yield from snapshot_replies(refresh_instead(request), reader, tally)
        return
    head = reader.heads([request.stream]).get(request.stream, 0)
    next_seq = request.from_seq
    while next_seq <= head:
        batch = reader.changes(request.stream, from_seq=next_seq, to_seq=head, limit=EVENT_SIZE)
        if not batch:
            break
        tally.changes += len(batch)
        yield event_body([body for _seq, body in batch])
        next_seq = batch[-1][0] + 1


def refresh_instead(request: CatchUpRequest) -> SnapshotPlan:
    """A refresh of the catch-up's stream from the till's position (`from_seq - 1`): the
    records changed since (tombstones included) in pages, then a SnapshotDone whose
    high-water moves the till's position to the head. A till of any version applies it
    (an unknown request id only leaves its pull log alone), so it needs to ask nothing."""
    topic = split_stream(request.stream)[0]
    snapshot = SnapshotRequest(
        terminal=request.terminal,
        location=request.location,
        pos=request.pos,
        terminal_kind=request.terminal_kind,
        request_id=f"{CATCH_UP_REFRESH}{uuid.uuid4()}",
        topics=[topic],
        since={request.stream: request.from_seq - 1},
    )
    since = {request.stream: request.from_seq - 1}
    return SnapshotPlan(snapshot, [request.stream], since, [], compacted=[request.stream])


def image_replies(plan: ImagePlan, reader: CatalogReader, tally: Tally) -> Iterator[bytes]:
    """One ImageData per known hash, then ImagesDone listing the unknown ones."""
    request_id = plan.request.request_id
    missing: list[str] = []
    sent = 0
    for start in range(0, len(plan.hashes), IMAGE_CHUNK):
        chunk = plan.hashes[start : start + IMAGE_CHUNK]
        found = reader.images(chunk)
        for sha256 in chunk:
            if sha256 not in found:
                missing.append(sha256)
                continue
            sent += 1
            yield encode(ImageData(request_id=request_id, sha256=sha256, data=found[sha256]))
    tally.images += sent
    yield encode(ImagesDone(request_id=request_id, sent=sent, missing=missing))
