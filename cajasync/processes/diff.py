"""Record-level diff of one topic, till against server, and the prune it enables.

    result = diff(engine, settings, "productos", Period())
    result.missing_on_server, result.missing_on_terminal, result.version_differs
    pruned = prune(engine, settings, "productos", apply=True)

Both sides put the same (key, version) entries in an EntrySet (cajasync/core/digests.py):
op ids and their latest versions for an up topic (the till's include purged operations,
marked so), record keys and versions for a download topic (inbox/questions.py reads the
server's). `reconcile` asks the server only about buckets whose summaries differ, through
the request queue and the till's direct reply-to channel (`ServerSide`), so two sides of
100,000 records with a handful of differences move kilobytes.

A prune deletes from the replica the records of a download topic the server no longer
has (tombstones that keep their versions: a record the server creates again later still
arrives, and no stream position moves).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import msgspec
from sqlalchemy.engine import Engine

from cajasync.broker.asking import pika_asking
from cajasync.broker.ports import Askers, Asking
from cajasync.core.db import reading
from cajasync.core.digests import EntrySet, reconcile
from cajasync.core.identity import TerminalIdentity, load_identity
from cajasync.core.periods import Period
from cajasync.core.settings import Settings
from cajasync.errors import ConfigError
from cajasync.processes.questions import (
    DEFAULT_TIMEOUT_S,
    ask,
    identity_fields,
    replica_versions,
    topic_slug,
)
from inbox.replica_store.sql import SqlReplicaStore
from outbox.recorded import recorded_ops
from schemas.codec import encode
from schemas.digests import MAX_BUCKETS, Bucket, Children, Entries
from schemas.questions import DigestAnswer, DigestQuestion, EntriesAnswer, EntriesQuestion
from schemas.topics import DOWN_TOPIC_SCOPES


class VersionDiffers(msgspec.Struct, frozen=True):
    """A key held on both sides in different versions."""

    key: str
    terminal: int
    server: int


class DiffResult(msgspec.Struct, frozen=True, kw_only=True):
    """The keys of one topic that differ; for an up topic `states` says the till's state
    of each key missing on the server (`purged` for a purged operation)."""

    topic: str
    direction: str  # up (op ids) or down (record keys)
    terminal_count: int
    server_count: int
    missing_on_server: list[str]
    missing_on_terminal: list[str]
    version_differs: list[VersionDiffers]
    states: dict[str, str] = {}
    rounds: int = 0
    bytes_moved: int = 0
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        return not (self.missing_on_server or self.missing_on_terminal or self.version_differs)


class PruneResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a prune found (`keys`: on the till, gone from the server) and whether it
    deleted them (`pruned`)."""

    topic: str
    keys: list[str]
    pruned: int
    applied: bool
    bytes_moved: int = 0


class ServerSide:
    """The server as the other side of a diff (`cajasync.core.digests.DigestSide`)."""

    def __init__(
        self,
        asking: Asking,
        identity: TerminalIdentity,
        topic: str,
        period: Period,
        *,
        timeout: float,
    ) -> None:
        self._asking = asking
        self._identity = identity
        self._topic = topic
        self._period = period if topic not in DOWN_TOPIC_SCOPES else Period()
        self._timeout = timeout
        self.bytes_moved = 0

    def children(self, buckets: Sequence[Bucket], fanout_bits: int) -> list[Children]:
        found: list[Children] = []
        for start in range(0, len(buckets), MAX_BUCKETS):
            question = DigestQuestion(
                **identity_fields(self._identity),
                request_id=str(uuid.uuid4()),
                topic=self._topic,
                buckets=list(buckets[start : start + MAX_BUCKETS]),
                fanout_bits=fanout_bits,
                since=self._period.since,
                until=self._period.until,
            )
            for answer in self._ask(question):
                if isinstance(answer, DigestAnswer):
                    found.extend(answer.children)
        return found

    def entries(self, buckets: Sequence[Bucket]) -> list[Entries]:
        found: list[Entries] = []
        for start in range(0, len(buckets), MAX_BUCKETS):
            question = EntriesQuestion(
                **identity_fields(self._identity),
                request_id=str(uuid.uuid4()),
                topic=self._topic,
                buckets=list(buckets[start : start + MAX_BUCKETS]),
                since=self._period.since,
                until=self._period.until,
            )
            for answer in self._ask(question):
                if isinstance(answer, EntriesAnswer):
                    found.extend(answer.entries)
        return found

    def _ask(self, question: DigestQuestion | EntriesQuestion) -> list[object]:
        sizes: list[int] = []
        answers = ask(self._asking, question, timeout=self._timeout, sizes=sizes)
        self.bytes_moved += len(encode(question)) + sum(sizes)
        return list(answers)


def diff(
    engine: Engine,
    settings: Settings,
    topic: str,
    period: Period,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    askers: Askers = pika_asking,
) -> DiffResult:
    """The keys of `topic` (slug or alias) that differ between the till and the server:
    op ids for an up topic (recorded in `period`), record keys for a download topic."""
    started = time.monotonic()
    slug = topic_slug(topic)
    with reading(engine) as connection:
        identity = load_identity(connection)
        ops = None if slug in DOWN_TOPIC_SCOPES else recorded_ops(connection, slug, period)
    if ops is None:
        entries = replica_versions(engine, identity, slug)
    else:
        entries = [(op.op_id, op.version) for op in ops.values()]
    with askers(settings, identity) as asking:
        side = ServerSide(asking, identity, slug, period, timeout=timeout)
        found = reconcile(EntrySet(entries, background=True), side)  # hashed while asking
    states = {} if ops is None else {key: ops[key].state for key in found.missing_remote}
    return DiffResult(
        topic=slug,
        direction="down" if ops is None else "up",
        terminal_count=found.local_count,
        server_count=found.remote_count,
        missing_on_server=found.missing_remote,
        missing_on_terminal=found.missing_local,
        version_differs=[
            VersionDiffers(k, mine, theirs) for k, mine, theirs in found.version_differs
        ],
        states=states,
        rounds=found.rounds,
        bytes_moved=found.bytes_moved,
        seconds=time.monotonic() - started,
    )


def prune(
    engine: Engine,
    settings: Settings,
    topic: str,
    *,
    apply: bool,
    keys: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    askers: Askers = pika_asking,
) -> PruneResult:
    """Find the replica records of a download topic the server no longer has, by the
    diff's digest exchange; delete them (tombstones) only when `apply`. With `keys` (the
    list a person was shown and confirmed) only those of them are found and deleted: one
    the server holds again since is kept."""
    slug = topic_slug(topic)
    if slug not in DOWN_TOPIC_SCOPES:
        raise ConfigError(f"{slug} is not a download topic: only replica records are pruned")
    found = diff(engine, settings, slug, Period(), timeout=timeout, askers=askers)
    gone = found.missing_on_server
    if keys is not None:
        confirmed = set(keys)
        gone = [key for key in gone if key in confirmed]
    pruned = 0
    if apply and gone:
        pruned = SqlReplicaStore(engine).tombstone(slug, gone, time.time())
    return PruneResult(
        topic=slug,
        keys=gone,
        pruned=pruned,
        applied=apply,
        bytes_moved=found.bytes_moved,
    )
