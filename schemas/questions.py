"""A technician's questions to the server, and their answers ("Comparar").

A question goes up like any request (`cajasync.up`, `req.<terminal>.<kind>`, to
`cajasync.requests`), but its answer does not go to the terminal's own queue: that one is
consumed by `cajasync terminal run`, which may be running. The asker consumes RabbitMQ's
direct reply-to pseudo-queue and names it in the question's `reply_to` property with a
`correlation_id` (the question's `request_id`); the server publishes the answer to that
address. An answer may take several messages: every one but the last has `more` set.

Questions carry the till's identity as a `SnapshotRequest` does, so the server answers
within the streams the till is entitled to. A period (`since` inclusive, `until`
exclusive, aware datetimes) filters operations by `recorded_at`; download topics have no
period.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

from cajasync.errors import InvalidMessage
from schemas.digests import Buckets, Children, Entries, FanoutBits
from schemas.envelope import TerminalId
from schemas.records import Record

MAX_HELD = 10_000  # op ids one held question may name
OpIds = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=MAX_HELD)
]
Topic = Annotated[str, msgspec.Meta(pattern=r"^[a-z-]{1,32}\Z")]


class CountsQuestion(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="counts"):
    """How many operations of this terminal (up topics) and live records within its streams
    (download topics) the server holds, per topic."""

    terminal: TerminalId
    location: TerminalId
    pos: TerminalId
    terminal_kind: str
    request_id: str
    topics: Annotated[list[Topic], msgspec.Meta(max_length=64)]
    since: dt.datetime | None = None
    until: dt.datetime | None = None


class HeldQuestion(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="held"):
    """What the server holds of some operations of this terminal (one up topic)."""

    terminal: TerminalId
    location: TerminalId
    pos: TerminalId
    terminal_kind: str
    request_id: str
    topic: Topic
    op_ids: OpIds


class DigestQuestion(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="digests"):
    """Summaries of `buckets` (2**fanout_bits children each) of one topic's (key, version)
    entries: op ids of this terminal for an up topic, record keys within its streams for a
    download topic."""

    terminal: TerminalId
    location: TerminalId
    pos: TerminalId
    terminal_kind: str
    request_id: str
    topic: Topic
    buckets: Buckets
    fanout_bits: FanoutBits
    since: dt.datetime | None = None
    until: dt.datetime | None = None


class EntriesQuestion(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="entries"):
    """The (key, version) entries of `buckets` of one topic (same set as DigestQuestion)."""

    terminal: TerminalId
    location: TerminalId
    pos: TerminalId
    terminal_kind: str
    request_id: str
    topic: Topic
    buckets: Buckets
    since: dt.datetime | None = None
    until: dt.datetime | None = None


class RecordQuestion(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="record"):
    """One record as the server holds it ("Comparar registros": a key on both sides): a
    download topic's record by key within this terminal's streams, or one of this
    terminal's operations of an up topic by op id."""

    terminal: TerminalId
    location: TerminalId
    pos: TerminalId
    terminal_kind: str
    request_id: str
    topic: Topic
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


Question = CountsQuestion | HeldQuestion | DigestQuestion | EntriesQuestion | RecordQuestion


# -- answers ----------------------------------------------------------------------------


class TopicCount(msgspec.Struct, frozen=True, kw_only=True):
    """What the server holds of one topic: `count` operations applied (files, for weekly
    files) or live records; `rejected` operations of the terminal it refused."""

    topic: str
    count: int
    rejected: int = 0


class CountsAnswer(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="counts-answer"
):
    request_id: str
    counts: list[TopicCount]
    more: bool = False


class HeldOp(msgspec.Struct, frozen=True, kw_only=True):
    """One operation as the server holds it: `status` applied, or rejected (its latest
    version refused), with the version and when the server received it."""

    op_id: str
    version: int
    received_at: dt.datetime
    status: str


class HeldAnswer(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="held-answer"):
    """The asked operations the server holds (those it does not are absent)."""

    request_id: str
    held: list[HeldOp]
    more: bool = False


class DigestAnswer(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="digests-answer"
):
    request_id: str
    children: list[Children]
    more: bool = False


class EntriesAnswer(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="entries-answer"
):
    """Entries of the asked buckets, in the asked order (one `Entries` per bucket)."""

    request_id: str
    entries: list[Entries]
    more: bool = False


class RecordAnswer(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="record-answer"
):
    """The asked record as the server holds it; `status` says how: `live` (a download
    topic's record), `deleted` (a tombstone: its version only), `applied` or `rejected`
    (an operation: its version, when received, the refusal's reason), or `absent`.
    `record` is the download record; `operation` the operation as the server stored it
    (JSON; a weekly chunk's data as its size)."""

    request_id: str
    topic: str
    key: str
    status: str
    version: int = 0
    record: Record | None = None
    operation: str = ""
    received_at: dt.datetime | None = None
    reason: str = ""
    more: bool = False


class Refused(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="refused"):
    """The server would not answer (the question was dead-lettered): why."""

    request_id: str
    reason: str
    more: bool = False


Answer = CountsAnswer | HeldAnswer | DigestAnswer | EntriesAnswer | RecordAnswer | Refused

_answer_decoder: msgspec.msgpack.Decoder[Answer] = msgspec.msgpack.Decoder(Answer)


def decode_answer(body: bytes) -> Answer:
    """Decode an answer from the server; InvalidMessage with the decoder's reason."""
    try:
        return _answer_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidMessage(f"undecodable answer: {exc}") from exc
