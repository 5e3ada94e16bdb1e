"""The server's answers to a technician's questions (schemas/questions.py), read from the
server store in the request handler's one read snapshot (inbox/catalog_reads.py).

What the server holds of a terminal, topic by topic, over exactly the entries the
record-level diff compares:

* an up topic: the operations of the terminal it applied (`server_operations`, current
  version), filtered by `recorded_at`; a weekly file is counted once, however many chunks
  it came in; `rejected` counts operations it only ever refused (`inbox_received`);
* a download topic: the live catalog records of the streams the terminal is entitled to
  (inbox/entitlement.py `streams_for`); no period;
* one record (`RecordQuestion`): a download record by key within those streams, or one
  of the terminal's operations by op id, as the server holds it.

Pure reads over a SQLAlchemy connection; errors are mapped by the caller's snapshot.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgspec
import sqlalchemy as sa

from cajasync.core.digests import EntrySet
from cajasync.core.server_tables import (
    REJECTED,
    catalog_records,
    operations,
    received,
    weekly_chunks,
)
from cajasync.errors import InvalidMessage
from inbox.entitlement import Requester, check_topic, streams_for
from schemas.codec import encode
from schemas.feed import split_stream
from schemas.questions import (
    CountsAnswer,
    CountsQuestion,
    DigestAnswer,
    DigestQuestion,
    EntriesAnswer,
    EntriesQuestion,
    HeldAnswer,
    HeldOp,
    HeldQuestion,
    Question,
    RecordAnswer,
    RecordQuestion,
    TopicCount,
)
from schemas.records import Record
from schemas.topics import DOWN_TOPIC_SCOPES, UP_TOPICS, WEEKLY_FILES

IN_CHUNK: Final = 500  # parameters per IN (...) list
HELD_PAGE: Final = 2_000  # held operations per answer message
ENTRY_TTL_S: Final = 10.0  # how long a diff's entries are reused between its rounds
ENTRIES_PAGE: Final = 256  # listed buckets per answer message (at most 64 entries each)


@dataclass(frozen=True, slots=True)
class QuestionPlan:
    """A checked question: who asks, answered to `reply_to` with `correlation_id`."""

    request: Question
    requester: Requester


@dataclass(frozen=True, slots=True)
class Period:
    """The question's period in UTC (None: open)."""

    since: dt.datetime | None
    until: dt.datetime | None


def plan_question(question: Question) -> QuestionPlan:
    """Check a question's topics (InvalidMessage for one to dead-letter)."""
    match question:
        case CountsQuestion():
            for topic in question.topics:
                check_any_topic(topic)
        case HeldQuestion():
            if question.topic not in UP_TOPICS:
                raise InvalidMessage(f"held: {question.topic!r} is not an up topic")
        case DigestQuestion() | EntriesQuestion() | RecordQuestion():
            check_any_topic(question.topic)
    requester = Requester(
        question.terminal, question.location, question.pos, question.terminal_kind
    )
    return QuestionPlan(question, requester)


def check_any_topic(topic: str) -> None:
    """Raise InvalidMessage unless `topic` is an up or a download topic."""
    if topic not in UP_TOPICS:
        check_topic(topic)


class EntryCache:
    """The server's EntrySet of each recent diff (terminal, topic, period), kept `ttl_s`
    seconds: a diff asks several rounds about the same entries, and hashing 100,000 of them
    takes about a second. Within the ttl every round sees the same entries, as one snapshot
    would."""

    def __init__(self, ttl_s: float = ENTRY_TTL_S, size: int = 8) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._sets: dict[tuple[object, ...], tuple[float, EntrySet]] = {}

    def get(
        self,
        connection: sa.Connection,
        requester: Requester,
        question: DigestQuestion | EntriesQuestion,
    ) -> EntrySet:
        now = time.monotonic()
        key = (requester, question.topic, question.since, question.until)
        held = self._sets.get(key)
        if held is not None and now - held[0] < self._ttl_s:
            return held[1]
        entries = EntrySet(topic_entries(connection, requester, question))
        self._sets = {k: v for k, v in self._sets.items() if now - v[0] < self._ttl_s}
        if len(self._sets) >= self._size:
            self._sets.pop(next(iter(self._sets)))
        self._sets[key] = (now, entries)
        return entries


def question_answers(
    plan: QuestionPlan, connection: sa.Connection, cache: EntryCache | None = None
) -> Iterator[bytes]:
    """The encoded answer messages of a checked question, in order (the last without
    `more`)."""
    question = plan.request
    match question:
        case CountsQuestion():
            period = utc_period(question.since, question.until)
            counts = [
                count_topic(connection, plan.requester, topic, period) for topic in question.topics
            ]
            yield encode(CountsAnswer(request_id=question.request_id, counts=counts))
        case HeldQuestion():
            held = held_ops(connection, question.terminal, question.topic, question.op_ids)
            pages = [held[i : i + HELD_PAGE] for i in range(0, len(held), HELD_PAGE)] or [[]]
            for index, page in enumerate(pages):
                more = index < len(pages) - 1
                yield encode(HeldAnswer(request_id=question.request_id, held=page, more=more))
        case DigestQuestion():
            entries = (cache or EntryCache()).get(connection, plan.requester, question)
            children = [
                entries.children(bucket, question.fanout_bits) for bucket in question.buckets
            ]
            yield encode(DigestAnswer(request_id=question.request_id, children=children))
        case EntriesQuestion():
            entries = (cache or EntryCache()).get(connection, plan.requester, question)
            listed = [entries.entries(bucket) for bucket in question.buckets]
            parts = [listed[i : i + ENTRIES_PAGE] for i in range(0, len(listed), ENTRIES_PAGE)]
            for index, part in enumerate(parts or [[]]):
                more = index < len(parts) - 1
                yield encode(EntriesAnswer(request_id=question.request_id, entries=part, more=more))
        case RecordQuestion():
            yield encode(record_answer(connection, plan.requester, question))


def topic_entries(
    connection: sa.Connection, requester: Requester, question: DigestQuestion | EntriesQuestion
) -> list[tuple[str, int]]:
    """The (key, version) entries a diff compares: the terminal's applied operations of an
    up topic in the period (op id, current version), or the live catalog records of a
    download topic within its streams (key, version)."""
    if question.topic in DOWN_TOPIC_SCOPES:
        c = catalog_records.c
        query = sa.select(c.key, c.version).where(
            c.topic == question.topic,
            c.scope.in_(_scopes(requester, question.topic)),
            c.deleted.is_(False),
        )
    else:
        period = utc_period(question.since, question.until)
        o = operations.c
        query = _applied(sa.select(o.op_id, o.version), requester.terminal, question.topic, period)
    return [(key, version) for key, version in connection.execute(query)]


def utc_period(since: dt.datetime | None, until: dt.datetime | None) -> Period:
    """A question's bounds in UTC (a naive bound is taken as UTC)."""
    return Period(_utc(since), _utc(until))


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


# -- counts ------------------------------------------------------------------------------


def count_topic(
    connection: sa.Connection, requester: Requester, topic: str, period: Period
) -> TopicCount:
    """What the server holds of one topic for the requester."""
    if topic in DOWN_TOPIC_SCOPES:
        return TopicCount(topic=topic, count=count_records(connection, requester, topic))
    terminal = requester.terminal
    if topic == WEEKLY_FILES:
        count = count_weekly_files(connection, terminal, period)
    else:
        query = sa.select(sa.func.count()).select_from(operations)
        count = connection.execute(_applied(query, terminal, topic, period)).scalar_one()
    rejected = count_rejected(connection, terminal, topic)
    return TopicCount(topic=topic, count=int(count), rejected=rejected)


S = TypeVar("S", bound=sa.Select[Any])


def _applied(query: S, terminal: str, topic: str, period: Period) -> S:
    """`query` narrowed to the terminal's applied operations of `topic` in `period`."""
    c = operations.c
    query = query.where(c.terminal == terminal, c.topic == topic)
    if period.since is not None:
        query = query.where(c.recorded_at >= period.since)
    if period.until is not None:
        query = query.where(c.recorded_at < period.until)
    return query


def count_weekly_files(connection: sa.Connection, terminal: str, period: Period) -> int:
    """Weekly files of the terminal (week, name, content hash) with a chunk in the period."""
    w = weekly_chunks.c
    files = sa.select(w.week, w.file_name, w.sha256).join_from(
        weekly_chunks, operations, operations.c.op_id == w.op_id
    )
    distinct = _applied(files, terminal, WEEKLY_FILES, period).distinct().subquery()
    return int(connection.execute(sa.select(sa.func.count()).select_from(distinct)).scalar_one())


def count_rejected(connection: sa.Connection, terminal: str, topic: str) -> int:
    """Operations of the terminal the server refused and never applied (any date)."""
    r = received.c
    applied = sa.select(operations.c.op_id).where(operations.c.op_id == r.op_id)
    query = sa.select(sa.func.count(sa.distinct(r.op_id))).where(
        r.terminal == terminal, r.topic == topic, r.status == REJECTED, ~applied.exists()
    )
    return int(connection.execute(query).scalar_one())


def count_records(connection: sa.Connection, requester: Requester, topic: str) -> int:
    """Live catalog records of `topic` in the requester's streams."""
    c = catalog_records.c
    query = sa.select(sa.func.count()).where(
        c.topic == topic, c.scope.in_(_scopes(requester, topic)), c.deleted.is_(False)
    )
    return int(connection.execute(query).scalar_one())


def _scopes(requester: Requester, topic: str) -> list[str]:
    return [split_stream(stream)[1] for stream in streams_for(requester, topic)]


# -- held operations ---------------------------------------------------------------------


def held_ops(
    connection: sa.Connection, terminal: str, topic: str, op_ids: Sequence[str]
) -> list[HeldOp]:
    """The asked operations of the terminal the server holds: applied (current version) or,
    never applied, rejected (latest refused version); by op id."""
    held: dict[str, HeldOp] = {}
    wanted = sorted(set(op_ids))
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start : start + IN_CHUNK]
        for op in _applied_ops(connection, terminal, topic, chunk):
            held[op.op_id] = op
        rest = [op_id for op_id in chunk if op_id not in held]
        for op in _rejected_ops(connection, terminal, topic, rest):
            if op.op_id not in held or held[op.op_id].version < op.version:
                held[op.op_id] = op
    return [held[op_id] for op_id in sorted(held)]


def _applied_ops(
    connection: sa.Connection, terminal: str, topic: str, op_ids: list[str]
) -> list[HeldOp]:
    o, r = operations.c, received.c
    query = (
        sa.select(o.op_id, o.version, sa.func.coalesce(r.received_at, o.applied_at).label("at"))
        .join_from(
            operations, received, sa.and_(r.op_id == o.op_id, r.version == o.version), isouter=True
        )
        .where(o.terminal == terminal, o.topic == topic, o.op_id.in_(op_ids))
    )
    return [
        HeldOp(op_id=row.op_id, version=row.version, received_at=row.at, status="applied")
        for row in connection.execute(query)
    ]


def _rejected_ops(
    connection: sa.Connection, terminal: str, topic: str, op_ids: list[str]
) -> list[HeldOp]:
    if not op_ids:
        return []
    r = received.c
    query = sa.select(r.op_id, r.version, r.received_at).where(
        r.terminal == terminal, r.topic == topic, r.status == REJECTED, r.op_id.in_(op_ids)
    )
    return [
        HeldOp(op_id=row.op_id, version=row.version, received_at=row.received_at, status=REJECTED)
        for row in connection.execute(query)
    ]


# -- one record --------------------------------------------------------------------------

_record_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)


def record_answer(
    connection: sa.Connection, requester: Requester, question: RecordQuestion
) -> RecordAnswer:
    """The asked record as the server holds it for the requester (see RecordAnswer)."""
    if question.topic in DOWN_TOPIC_SCOPES:
        return _catalog_record(connection, requester, question)
    return _operation(connection, requester.terminal, question)


def _catalog_record(
    connection: sa.Connection, requester: Requester, question: RecordQuestion
) -> RecordAnswer:
    """The record of `key` in the requester's streams: the live one, else the newest
    tombstone, else absent."""
    c = catalog_records.c
    query = (
        sa.select(c.version, c.deleted, c.body)
        .where(
            c.topic == question.topic,
            c.key == question.key,
            c.scope.in_(_scopes(requester, question.topic)),
        )
        .order_by(c.deleted, c.version.desc())
        .limit(1)
    )
    row = connection.execute(query).first()
    answer = RecordAnswer(
        request_id=question.request_id, topic=question.topic, key=question.key, status="absent"
    )
    if row is None:
        return answer
    if row.deleted or row.body is None:
        return msgspec.structs.replace(answer, status="deleted", version=row.version)
    record = _record_decoder.decode(row.body)
    return msgspec.structs.replace(answer, status="live", version=row.version, record=record)


def _operation(connection: sa.Connection, terminal: str, question: RecordQuestion) -> RecordAnswer:
    """The terminal's operation `key` (an op id): applied (its current version and what
    the server stored), else its latest refused version with the reason, else absent."""
    answer = RecordAnswer(
        request_id=question.request_id, topic=question.topic, key=question.key, status="absent"
    )
    held = held_ops(connection, terminal, question.topic, [question.key])
    if not held:
        return answer
    [op] = held
    answer = msgspec.structs.replace(
        answer, status=op.status, version=op.version, received_at=op.received_at
    )
    if op.status == REJECTED:
        r = received.c
        reason = connection.execute(
            sa.select(r.reason).where(r.op_id == op.op_id, r.version == op.version)
        ).scalar()
        return msgspec.structs.replace(answer, reason=reason or "")
    payload = connection.execute(
        sa.select(operations.c.payload).where(operations.c.op_id == op.op_id)
    ).scalar()
    return msgspec.structs.replace(answer, operation=_readable(question.topic, payload or ""))


def _readable(topic: str, payload: str) -> str:
    """The stored JSON of an operation; a weekly chunk's data as its size (base64 in JSON)."""
    if topic != WEEKLY_FILES or not payload:
        return payload
    data: dict[str, Any] = json.loads(payload)
    if isinstance(data.get("data"), str):
        data["data"] = f"<{len(base64.b64decode(data['data'])):,} bytes>"
    return json.dumps(data)
