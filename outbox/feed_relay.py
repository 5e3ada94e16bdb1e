"""The server relay: the catalog's change log down to the terminals.

    stats = run_feed_relay(engine, settings, stop=stop_event)  # until stopped
    stats = run_feed_relay(engine, settings, until_idle=1.0)  # until nothing is left

The change log is a source of the relay engine (`outbox.relay.Relay`, which owns the
loop, the confirm window and reconnects). Every tick (`settings.poll_interval_s`, or at
once when confirms free the window) it *settles* what the broker confirmed (one UPDATE
setting `published_at`), then *claims* unpublished `catalog_changes` rows in `id` order
and publishes them to `cajasync.down` (through a `cajasync.broker.ports.FeedSession`) with routing
key `chg.<topic>.<scope>`: consecutive rows of one stream travel as one `ChangeEvent` (so
stream order holds inside and across messages on the one channel). Publisher confirms
are pipelined: up to `settings.publish_window` changes are in flight.

Nothing is skipped: the claim is "every unpublished row not in flight", not "rows after a
cursor", so a row whose transaction committed late is still found. A lost connection or
a restart leaves unconfirmed rows unpublished and they simply go again; terminals apply
by version, so a duplicate is harmless. Run one feed relay per server store.

A database that is away pauses the ticks (`cajasync.core.store_faults.Outage`: the ioloop keeps
the broker session alive meanwhile); confirmed changes stay to be marked when it is back.
Only an outage longer than `store_give_up_s` stops the relay.

Every `settings.head_interval_s` it also publishes the *stream heads*: for each scope, one
`ChangeEvent` without changes whose `heads` hold the head seq of every stream of the scope
whose changes are all published and confirmed, on a routing key every terminal of the
scope is bound to. A terminal behind a head lost the stream's last changes and asks for a
catch-up, so a lost change is noticed within an interval or two even when nothing else
changes. Heads expire in the queues after two intervals (an offline till does not pile
them up: a newer one is always on its way).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Final, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.broker.confirms import Window
from cajasync.broker.links import FeedLink
from cajasync.broker.ports import Event, FeedSession, FeedSessions
from cajasync.core.counters import counters_text
from cajasync.core.lease import StoreLease
from cajasync.core.server_tables import change_log, stream_heads
from cajasync.core.settings import Settings
from cajasync.core.store_faults import translated
from cajasync.core.topology import change_routing_key, heads_routing_key
from cajasync.errors import StoreError
from outbox.holds import doubling
from outbox.relay import Relay, Until
from schemas.codec import encode
from schemas.feed import ChangeEvent, split_stream

log = logging.getLogger(__name__)

MAX_EVENT_CHANGES: Final = 100  # changes of one stream per message
MAX_EVENT_BYTES: Final = 256 * 1024
MARK_CHUNK: Final = 5000


# -- the change log's SQL ------------------------------------------------------------------


class ChangeRow(NamedTuple):
    """One unpublished change as the relay reads it."""

    id: int
    stream: str
    seq: int
    topic: str
    scope: str
    body: bytes  # msgpack schemas.feed.Change


def claim_unpublished(connection: sa.Connection, limit: int) -> list[ChangeRow]:
    """The first `limit` unpublished changes in publish (`id`) order."""
    c = change_log.c
    rows = connection.execute(
        sa.select(c.id, c.stream, c.seq, c.topic, c.scope, c.body)
        .where(c.published_at.is_(None))
        .order_by(c.id)
        .limit(limit)
    )
    return [ChangeRow(*row) for row in rows]


def mark_published(connection: sa.Connection, ids: Sequence[int], *, now: float) -> int:
    """Record the broker's confirm of these changes."""
    marked = 0
    ordered = sorted(ids)
    for start in range(0, len(ordered), MARK_CHUNK):
        chunk = ordered[start : start + MARK_CHUNK]
        statement = change_log.update().where(change_log.c.id.in_(chunk)).values(published_at=now)
        marked += connection.execute(statement).rowcount
    return marked


# -- stream heads: what every terminal of a scope should have seen ------------------------


def published_heads(connection: sa.Connection) -> dict[str, int]:
    """Head seq of every stream whose changes have all been published and confirmed.

    A stream with a change still unpublished (or in flight) is left out: that change will
    reach the terminals after the heads and tell them about any gap itself. One statement,
    so the heads and the change log are read at one moment.
    """
    unpublished = sa.select(change_log.c.stream).where(change_log.c.published_at.is_(None))
    rows = connection.execute(
        sa.select(stream_heads.c.stream, stream_heads.c.seq).where(
            stream_heads.c.seq > 0, stream_heads.c.stream.not_in(unpublished)
        )
    )
    return {stream: seq for stream, seq in rows}


def heads_messages(heads: dict[str, int]) -> list[tuple[str, bytes]]:
    """(routing key, encoded ChangeEvent without changes) holding the heads, one per scope."""
    by_scope: dict[str, dict[str, int]] = {}
    for stream, seq in sorted(heads.items()):
        by_scope.setdefault(split_stream(stream)[1], {})[stream] = seq
    messages: list[tuple[str, bytes]] = []
    for scope, scope_heads in by_scope.items():
        routing_key = heads_routing_key(scope)
        if routing_key is not None:
            messages.append((routing_key, encode(ChangeEvent(changes=[], heads=scope_heads))))
    return messages


# -- events: consecutive rows of one stream, one message -----------------------------------


class _RawChangeEvent(msgspec.Struct, tag_field="kind", tag="change"):
    """`schemas.feed.ChangeEvent` with its changes already encoded (same bytes on the wire)."""

    changes: list[msgspec.Raw]


def events_of(rows: Sequence[ChangeRow]) -> list[Event]:
    """Group consecutive rows of the same stream into events (bounded in count and bytes)."""
    events: list[Event] = []
    group: list[ChangeRow] = []
    size = 0
    for row in rows:
        if group and (
            row.stream != group[0].stream
            or len(group) >= MAX_EVENT_CHANGES
            or size + len(row.body) > MAX_EVENT_BYTES
        ):
            events.append(_event(group))
            group, size = [], 0
        group.append(row)
        size += len(row.body)
    if group:
        events.append(_event(group))
    return events


def _event(rows: list[ChangeRow]) -> Event:
    first = rows[0]
    body = encode(_RawChangeEvent(changes=[msgspec.Raw(row.body) for row in rows]))
    return Event(
        routing_key=change_routing_key(first.topic, first.scope),
        stream=first.stream,
        first_seq=first.seq,
        last_seq=rows[-1].seq,
        ids=[row.id for row in rows],
        body=body,
    )


# -- the change log as a relay source ------------------------------------------------------


@dataclass
class FeedStats:
    """Counters of one feed relay run."""

    published: int = 0  # changes handed to the broker (a re-publish counts again)
    confirmed: int = 0  # changes the broker confirmed
    events: int = 0  # messages published
    nacked: int = 0  # changes the broker refused (published again later)
    reconnects: int = 0
    heads: int = 0  # stream-heads messages published

    def copy(self) -> FeedStats:
        return replace(self)

    def __str__(self) -> str:
        return counters_text(self)


class ChangeLogSource:
    """Unpublished changes in `id` order as events, for `outbox.relay.Relay`; after a nack
    the whole log is held back, doubling up to `retry_max_s` while nacks go on."""

    name = "feed relay"
    write_every_s = 0.0  # confirms are marked every tick

    def __init__(self, engine: Engine, settings: Settings, lease: StoreLease | None = None) -> None:
        self.engine, self.settings, self.lease = engine, settings, lease
        self.window: Window[int] = Window(settings.publish_window)
        self.events = 0
        self.hold_until = 0.0
        self._nack_streak = 0

    def errors(self, doing: str) -> AbstractContextManager[None]:
        return _store_errors(doing)

    def claim(self, space: int) -> list[Event] | None:
        """Events of unpublished changes not in flight; None while held back after a nack."""
        if time.monotonic() < self.hold_until:
            return None
        if self.lease is not None and not self.lease.held():
            return []  # another server process publishes the change log
        with _store_errors("claiming changes"), self.engine.connect() as connection:
            rows = claim_unpublished(connection, self.window.size)
        return events_of([row for row in rows if row.id not in self.window][:space])

    def keys(self, message: Event) -> tuple[int, ...]:
        return tuple(message.ids)

    def publish(self, session: FeedSession, message: Event) -> None:
        session.publish(message)
        self.events += 1

    def marks(self, confirmed: list[int], refused: dict[int, str]) -> bool:
        return bool(confirmed)  # a nack writes nothing: the change simply goes again

    def mark(
        self, connection: sa.Connection, confirmed: list[int], refused: dict[int, str]
    ) -> None:
        mark_published(connection, confirmed, now=time.time())

    def settled(self, confirmed: list[int], refused: dict[int, str]) -> None:
        """Hold back after a nack (the changes go again later)."""
        if confirmed:
            self._nack_streak = 0
        if not refused:
            return
        self._nack_streak += 1
        delay = doubling(
            self.settings.retry_initial_s, self.settings.retry_max_s, self._nack_streak
        )
        self.hold_until = time.monotonic() + delay
        log.warning(
            "feed relay: broker nacked %d change(s) (a queue could not take them); "
            "publishing again in %.1fs",
            len(refused),
            delay,
        )

    def may_reclaim(self, now: float) -> bool:
        return True

    def reset(self) -> None:
        self.hold_until = 0.0


class StreamHeads:
    """Every `settings.head_interval_s` of a session, the heads of every fully published
    stream, one message per scope (see the module's docstring)."""

    def __init__(self, engine: Engine, settings: Settings, lease: StoreLease | None = None) -> None:
        self.engine, self.settings, self.lease = engine, settings, lease
        self.published = 0

    def start(self, relay: Relay[int, Event, FeedSession]) -> None:
        if self.settings.head_interval_s > 0:
            relay.call_later(self.settings.head_interval_s, lambda: self._publish(relay))

    def _publish(self, relay: Relay[int, Event, FeedSession]) -> None:
        """They are advice: a database error skips this round (with a warning) and never
        ends the relay. Each takes a delivery tag but carries no change to mark."""
        if relay.link is None or relay.done:
            return
        self.start(relay)
        if self.lease is not None and not self.lease.held():
            return  # the holder's relay publishes them
        try:
            with _store_errors("reading stream heads"), self.engine.connect() as connection:
                heads = published_heads(connection)
        except StoreError as exc:
            log.warning("feed relay: stream heads skipped this time: %s", exc)
            return
        ttl_s = 2 * self.settings.head_interval_s
        for routing_key, body in heads_messages(heads):
            self.published += relay.publish_unsettled(_heads_sender(routing_key, body, ttl_s))
        relay.report()


def _heads_sender(routing_key: str, body: bytes, ttl_s: float) -> Callable[[FeedSession], None]:
    return lambda link: link.publish_heads(routing_key, body, ttl_s=ttl_s)


def run_feed_relay(
    engine: Engine,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    until_idle: float | None = None,
    on_progress: Callable[[FeedStats], None] | None = None,
    connect: FeedSessions = FeedLink,
    lease: StoreLease | None = None,
) -> FeedStats:
    """Publish the change log to `cajasync.down` until `stop` is set or, with `until_idle`,
    nothing was left to publish for that many seconds.

    An unreachable broker is retried with back-off for as long as `stop` is unset; with
    `until_idle`, BrokerUnavailable is raised once it stays away that long. `connect`
    builds the broker session (a stub broker's in tests). With `lease` (several server
    processes on one store), changes and heads are published only while it is held.
    """
    source = ChangeLogSource(engine, settings, lease)
    heads = StreamHeads(engine, settings, lease)
    reported = FeedStats()

    def stats() -> FeedStats:
        counts = relay.counts
        return FeedStats(
            published=counts.published,
            confirmed=counts.confirmed,
            events=source.events,
            nacked=counts.nacked,
            reconnects=counts.reconnects,
            heads=heads.published,
        )

    def report() -> None:
        nonlocal reported
        if on_progress is not None and stats() != reported:
            reported = stats()
            on_progress(reported.copy())

    relay: Relay[int, Event, FeedSession] = Relay(
        source,
        engine,
        settings,
        connect=lambda handler: connect(settings, handler),
        until=Until(idle=until_idle),
        stop=stop,
        tolerate_outages=True,
        on_ready=heads.start,
        on_progress=report,
    )
    relay.run()
    return stats()


def _store_errors(doing: str) -> AbstractContextManager[None]:
    """Database errors while `doing` become cajasync errors (StoreUnavailable: an outage)."""
    return translated("feed relay", doing)
