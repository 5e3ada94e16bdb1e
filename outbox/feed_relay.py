"""The server relay: the catalog's change log down to the terminals.

    stats = run_feed_relay(engine, settings, stop=stop_event)  # until stopped
    stats = run_feed_relay(engine, settings, until_idle=1.0)  # until nothing is left

Every tick (`settings.poll_interval_s`, or at once when confirms free the window) it
*settles* what the broker confirmed (one UPDATE setting `published_at`), then *claims*
unpublished `catalog_changes` rows in `id` order and publishes them to `cajasync.down`
(through a `cajasync.broker.ports.FeedLink`) with routing key `chg.<topic>.<scope>`:
consecutive rows of one stream travel as one `ChangeEvent` (so stream order holds inside
and across messages on the one channel). Publisher confirms are pipelined: up to
`settings.publish_window` changes are in flight.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

import msgspec
import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Engine

from cajasync.broker.links import FeedLink
from cajasync.broker.ports import Event, FeedSession, FeedSessions
from cajasync.broker.rabbitmq import reconnect_policy
from cajasync.core.server_tables import change_log, stream_heads
from cajasync.core.settings import Settings
from cajasync.core.store_faults import Outage, store_error
from cajasync.core.topology import change_routing_key, heads_routing_key
from cajasync.errors import BrokerUnavailable, StoreError, StoreUnavailable
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


@dataclass
class Inflight:
    """Unconfirmed events on one channel by delivery tag, and the change ids each carries."""

    capacity: int  # changes
    _ids_by_tag: dict[int, list[int]] = field(default_factory=dict)
    _ids: set[int] = field(default_factory=set)
    _last_tag: int = 0

    @property
    def space(self) -> int:
        return max(0, self.capacity - len(self._ids))

    @property
    def empty(self) -> bool:
        return not self._ids_by_tag

    def __contains__(self, change_id: object) -> bool:
        return change_id in self._ids

    def add(self, ids: list[int]) -> int:
        """Record the publish of one event carrying `ids`; return its delivery tag."""
        self._last_tag += 1
        self._ids_by_tag[self._last_tag] = ids
        self._ids.update(ids)
        return self._last_tag

    def settle(self, tag: int, *, multiple: bool) -> list[int]:
        """The change ids a broker ack/nack of `tag` (and earlier ones if `multiple`) covers."""
        tags = [t for t in self._ids_by_tag if t <= tag] if multiple else [tag]
        settled: list[int] = []
        for settled_tag in tags:
            settled += self._ids_by_tag.pop(settled_tag, [])
        self._ids.difference_update(settled)
        return settled

    def reset(self) -> None:
        """Forget everything in flight (the channel is gone)."""
        self._ids_by_tag.clear()
        self._ids.clear()
        self._last_tag = 0


# -- the relay -----------------------------------------------------------------------------


@dataclass
class FeedStats:
    """Counters of one feed relay run."""

    published: int = 0  # changes handed to the broker (a re-publish counts again)
    confirmed: int = 0  # changes the broker confirmed (marked published)
    events: int = 0  # messages published
    nacked: int = 0  # changes the broker refused (published again later)
    reconnects: int = 0
    heads: int = 0  # stream-heads messages published

    def copy(self) -> FeedStats:
        return replace(self)


class FeedRelay:
    """Claim, publish, settle; reconnects until stopped or idle."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        until_idle: float | None = None,
        on_progress: Callable[[FeedStats], None] | None = None,
        open_session: FeedSessions = FeedLink,
    ) -> None:
        self.engine, self.settings, self.until_idle = engine, settings, until_idle
        self._open_session = open_session
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.stats = FeedStats()
        self.inflight = Inflight(settings.publish_window)
        self.link: FeedSession | None = None
        self.done = False
        self._sessions = 0
        self._nack_streak = 0
        self._reported = self.stats.copy()
        self._outage = Outage(settings, what="feed relay")
        self._reset_session()

    # -- runs and sessions ----------------------------------------------------------------

    def run(self) -> FeedStats:
        """Relay until stopped (or idle); BrokerUnavailable if the broker stays away past it."""
        while not self.done and not self.stop.is_set():
            try:
                self._policy()(self._session)
            except BrokerUnavailable:
                if self.stop.is_set():
                    break
                raise
        return self.stats.copy()

    def _session(self) -> None:
        """One broker session; returns when done or when a productive session was lost."""
        if self._sessions:
            self.stats.reconnects += 1
        self._sessions += 1
        confirmed_before = self.stats.confirmed
        self.link = self._open_session(self.settings, self)
        try:
            self.link.run()
        except BrokerUnavailable as exc:
            up_for = time.monotonic() - (self.ready_at or time.monotonic())
            if self.stats.confirmed == confirmed_before and up_for < self.settings.retry_max_s:
                raise  # nothing got through: back off
            log.warning("feed relay: %s; reconnecting", exc)
        finally:
            self._settle_before_leaving()
            self.inflight.reset()
            self._reset_session()
            self.link = None

    def _policy(self) -> tenacity.Retrying:
        return reconnect_policy(
            self.settings, what="feed relay", stop=self.stop, give_up_after=self.until_idle
        )

    def _reset_session(self) -> None:
        self.ready_at: float | None = None
        self.confirmed: list[int] = []
        self.nacked: list[int] = []
        self.hold_until = 0.0
        self.last_activity = time.monotonic()
        self.found_nothing = False
        self._kicked = False

    # -- SessionHandler: FeedLink events --------------------------------------------------

    def wants_stop(self) -> bool:
        return self.stop.is_set()

    def on_ready(self) -> None:
        log.info("feed relay connected")
        self.ready_at = time.monotonic()
        self._tick_periodically()
        self._heads_later()

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        ids = self.inflight.settle(tag, multiple=multiple)
        (self.confirmed if ok else self.nacked).extend(ids)
        self.last_activity = time.monotonic()
        if self.inflight.space * 4 >= self.inflight.capacity:
            self._kick()

    # -- ticks ----------------------------------------------------------------------------

    def _tick_periodically(self) -> None:
        self._tick()
        if self.link is not None and not self.done:
            self.link.call_later(self.settings.poll_interval_s, self._tick_periodically)

    def _kick(self) -> None:
        """Tick as soon as the ioloop is free (confirms made room in the window)."""
        if not self._kicked and self.link is not None:
            self._kicked = True
            self.link.call_later(0, self._tick)

    def _tick(self) -> None:
        self._kicked = False
        if self.done or self.link is None:
            return
        if self._outage.waiting() and not self.stop.is_set():
            return
        try:
            self._settle()
            if self._finished():
                self.done = True
                self.link.close()
            else:
                self._fill()
        except StoreUnavailable as exc:
            self._outage.failed(exc)  # raises once the outage lasted past store_give_up_s
            if self.stop.is_set():
                self.done = True
                self.link.close()
        else:
            self._outage.over()
        self._report()

    def _heads_later(self) -> None:
        if self.settings.head_interval_s > 0 and self.link is not None and not self.done:
            self.link.call_later(self.settings.head_interval_s, self._heads_periodically)

    def _heads_periodically(self) -> None:
        self._publish_heads()
        self._heads_later()

    def _finished(self) -> bool:
        if self.stop.is_set():
            return True
        idle = self.until_idle
        quiet = self.inflight.empty and self.found_nothing
        return idle is not None and quiet and time.monotonic() - self.last_activity >= idle

    def _report(self) -> None:
        if self.on_progress is not None and self.stats != self._reported:
            self._reported = self.stats.copy()
            self.on_progress(self._reported.copy())

    # -- settle and fill ------------------------------------------------------------------

    def _settle(self) -> None:
        """Mark confirmed changes published; hold back after a nack (they go again later)."""
        if self.confirmed:
            with _store_errors("marking changes published"), self.engine.begin() as connection:
                mark_published(connection, self.confirmed, now=time.time())
            self.stats.confirmed += len(self.confirmed)
            self.confirmed = []
            self._nack_streak = 0
        if self.nacked:
            self.stats.nacked += len(self.nacked)
            self._nack_streak += 1
            delay = min(
                self.settings.retry_max_s,
                self.settings.retry_initial_s * 2 ** (self._nack_streak - 1),
            )
            self.hold_until = time.monotonic() + delay
            log.warning(
                "feed relay: broker nacked %d change(s) (a queue could not take them); "
                "publishing again in %.1fs",
                len(self.nacked),
                delay,
            )
            self.nacked = []

    def _settle_before_leaving(self) -> None:
        """Settle at the end of a session; with the store away, confirmed changes stay
        unpublished and simply go again (a duplicate is harmless)."""
        try:
            self._settle()
        except StoreUnavailable as exc:
            log.warning("feed relay: %d confirmed change(s) go again: %s", len(self.confirmed), exc)
            self.confirmed = []

    def _fill(self) -> None:
        """Publish unpublished changes, in id order, while the window has room."""
        if self.inflight.space == 0 or self.link is None or time.monotonic() < self.hold_until:
            return
        with _store_errors("claiming changes"), self.engine.connect() as connection:
            rows = claim_unpublished(connection, self.inflight.capacity)
        fresh = [row for row in rows if row.id not in self.inflight][: self.inflight.space]
        self.found_nothing = not fresh
        for event in events_of(fresh):
            self.link.publish(event)
            self.inflight.add(event.ids)
            self.stats.events += 1
            self.stats.published += len(event.ids)
        if fresh:
            self.last_activity = time.monotonic()

    # -- stream heads -----------------------------------------------------------------------

    def _publish_heads(self) -> None:
        """Publish the heads of every fully published stream, one message per scope.

        They are advice: a database error skips this round (with a warning) and never
        ends the relay. Each takes a delivery tag but carries no change to mark.
        """
        if self.link is None or self.done:
            return
        try:
            with _store_errors("reading stream heads"), self.engine.connect() as connection:
                heads = published_heads(connection)
        except StoreError as exc:
            log.warning("feed relay: stream heads skipped this time: %s", exc)
            return
        ttl_s = 2 * self.settings.head_interval_s
        for routing_key, body in heads_messages(heads):
            self.link.publish_heads(routing_key, body, ttl_s=ttl_s)
            self.inflight.add([])
            self.stats.heads += 1
        self._report()


def run_feed_relay(
    engine: Engine,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    until_idle: float | None = None,
    on_progress: Callable[[FeedStats], None] | None = None,
    open_session: FeedSessions = FeedLink,
) -> FeedStats:
    """Publish the change log to `cajasync.down` until `stop` is set or, with `until_idle`,
    nothing was left to publish for that many seconds.

    An unreachable broker is retried with back-off for as long as `stop` is unset; with
    `until_idle`, BrokerUnavailable is raised once it stays away that long.
    `open_session` opens the broker sessions (RabbitMQ; `StubBroker.feed_link` in tests).
    """
    relay = FeedRelay(
        engine,
        settings,
        stop=stop,
        until_idle=until_idle,
        on_progress=on_progress,
        open_session=open_session,
    )
    return relay.run()


@contextmanager
def _store_errors(doing: str) -> Iterator[None]:
    """Turn SQLAlchemy errors into StoreError (StoreUnavailable for an outage) naming the
    action."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise store_error(exc, "feed relay", doing) from exc
