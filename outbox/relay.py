"""The relay engine: claim, publish, settle, over one broker session at a time.

    relay = Relay(source, settings, connect=lambda handler: Link(...), until_idle=1.0)
    counts = relay.run()

Written once for both relays; what is relayed is a *source* (`outbox.terminal_source`:
the terminal's outbox rows; `outbox.feed_relay`: the server's change log). Every tick
(`settings.poll_interval_s`, or at once when confirms free the window) the engine
*settles* what the broker said (the source marks confirmed and refused keys in one short
write transaction), then *claims* and publishes more while the confirm window
(`cajasync.broker.confirms.Window`) has room. A claim only reads. Publisher confirms are
pipelined; a lost connection is retried with the broker's reconnect policy, and what was
in flight stays unsettled and is claimed and published again in the next session.

A *companion* may share the session and the write transaction: the terminal's inbox
consumer applies what the server sent in the same transaction that marks sent rows, so
the terminal takes its database's write lock once a tick at most.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Final, Generic, Protocol, TypeVar

import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Engine

from cajasync.broker.confirms import Window
from cajasync.broker.rabbitmq import reconnect_policy
from cajasync.core import metrics
from cajasync.core.settings import Settings
from cajasync.core.store_faults import Outage
from cajasync.errors import BrokerUnavailable, StoreUnavailable

log = logging.getLogger(__name__)

WRITE_EVERY_S: Final = 0.5
"""How long broker confirms may wait to be written when nothing asks sooner."""
NACKED: Final = (
    "nacked by the broker: a queue could not take it (full, or a quorum queue without a "
    "majority of its nodes); it is retried later"
)

K = TypeVar("K")  # what a confirm settles: an outbox seq, a change id
M = TypeVar("M")  # what one publish sends: an outbox row, a change event
L = TypeVar("L", bound="Session")  # the broker session
L_contra = TypeVar("L_contra", bound="Session", contravariant=True)


class Session(Protocol):
    """The broker session as the engine drives it (`ConfirmSession` and its stub)."""

    def run(self) -> None: ...

    def close(self) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> None: ...


class Handler(Protocol):
    """The engine's side of the session: what it does with broker events."""

    def wants_stop(self) -> bool: ...

    def on_ready(self) -> None: ...

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None: ...


class Source(Protocol[K, M, L_contra]):
    """What a relay relays: claims messages, publishes them, records their settlement."""

    name: str  # "relay of terminal T1", "feed relay": in logs and errors
    window: Window[K]  # the confirm window its claims look at
    write_every_s: float  # 0: settle every tick, and tick as soon as confirms free room

    def errors(self, doing: str) -> AbstractContextManager[None]:
        """Turn database errors into cajasync errors naming the source and `doing`."""

    def claim(self, space: int) -> Sequence[M] | None:
        """Up to `space` keys' worth of messages, none in flight; None: hold back for now."""

    def keys(self, message: M) -> tuple[K, ...]:
        """The keys a confirm of `message` settles."""

    def publish(self, session: L_contra, message: M) -> None: ...

    def marks(self, confirmed: list[K], refused: dict[K, str]) -> bool:
        """Whether settling these writes to the database."""

    def mark(self, connection: sa.Connection, confirmed: list[K], refused: dict[K, str]) -> None:
        """Record confirmed and refused keys (in the engine's write transaction)."""

    def settled(self, confirmed: list[K], refused: dict[K, str]) -> None:
        """Once committed (refused keys: held back before they go again)."""

    def may_reclaim(self, now: float) -> bool:
        """Whether the next claim may take keys that were confirmed since the last write."""

    def reset(self) -> None:
        """The session ended: nothing is in flight any more."""


class Companion(Protocol):
    """Work sharing the relay's session and write transaction (the terminal's inbox)."""

    def waiting(self) -> bool:
        """Something is buffered to write."""

    def urgent(self) -> bool:
        """What is buffered should be written at this tick."""

    def write(self, connection: sa.Connection) -> Callable[[], None]:
        """Write what is buffered; return what to do once the transaction committed."""

    def progress(self) -> int:
        """A count that grows with what was applied (a session that moved it worked)."""

    def reset(self) -> None:
        """The session ended: what was buffered is redelivered to the next one."""


@dataclass
class Counts:
    """What the engine counted: keys published, confirmed, refused; sessions lost."""

    published: int = 0
    confirmed: int = 0
    nacked: int = 0
    returned: int = 0
    reconnects: int = 0

    def copy(self) -> Counts:
        return replace(self)


@dataclass(frozen=True)
class Until:
    """When a run ends, besides `stop`."""

    drained: bool = False  # nothing left to claim and nothing in flight
    idle: float | None = None  # nothing published, confirmed or received for this long
    deadline: float | None = None  # time.monotonic() at which to end regardless


class Relay(Generic[K, M, L]):
    """Claim, publish, settle; reconnects until it is done."""

    def __init__(
        self,
        source: Source[K, M, L],
        engine: Engine,
        settings: Settings,
        *,
        connect: Callable[[Handler], L],
        until: Until = Until(),
        stop: threading.Event | None = None,
        companion: Companion | None = None,
        tolerate_outages: bool = False,
        on_ready: Callable[[Relay[K, M, L]], None] | None = None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.source, self.engine, self.settings = source, engine, settings
        self.connect, self.until, self.companion = connect, until, companion
        self.stop = stop or threading.Event()
        self.on_ready_hook, self.on_progress = on_ready, on_progress
        self.outage = Outage(settings, what=source.name) if tolerate_outages else None
        self.window = source.window
        self._label = "feed" if "feed" in source.name else "terminal"  # metrics label
        self.counts = Counts()
        self.link: L | None = None
        self.done = False
        self._sessions = 0
        self._reset_session_state()

    # -- runs and sessions ----------------------------------------------------------------

    def run(self) -> Counts:
        """Relay until done; BrokerUnavailable only if the broker stays away past a limit."""
        while not self.done and not self.wants_stop():
            try:
                self._policy()(self._session)
            except BrokerUnavailable:
                if self.stop.is_set():
                    break
                raise
        return self.counts.copy()

    def _session(self) -> None:
        """One broker session; returns when done or when a productive session was lost."""
        if self._sessions:
            self.counts.reconnects += 1
            self.report()
        self._sessions += 1
        before = self._progress()
        self.link = self.connect(self)
        try:
            self.link.run()
        except BrokerUnavailable as exc:
            if self._progress() == before and not self._was_up_a_while():
                raise  # nothing got through: back off
            log.warning("%s: %s; reconnecting", self.source.name, exc)
        finally:
            self._end_session()

    def _progress(self) -> tuple[int, int]:
        applied = self.companion.progress() if self.companion is not None else 0
        return self.counts.confirmed, applied

    def _was_up_a_while(self) -> bool:
        """The session worked for longer than the longest back-off: reconnect at once."""
        up_since = self.ready_at
        return up_since is not None and time.monotonic() - up_since >= self.settings.retry_max_s

    def _policy(self) -> tenacity.Retrying:
        """The broker reconnect policy, ended by `stop`, `until.idle` or the deadline."""
        limit = self.until.idle
        if self.until.deadline is not None:
            limit = max(0.0, self.until.deadline - time.monotonic())
        return reconnect_policy(
            self.settings, what=self.source.name, stop=self.stop, give_up_after=limit
        )

    def _end_session(self) -> None:
        """Record what the broker confirmed; everything still in flight stays unsettled."""
        try:
            self._settle()
        except StoreUnavailable as exc:
            if self.outage is None:
                raise
            log.warning(
                "%s: %d confirmed key(s) go again: %s",
                self.source.name,
                len(self.confirmed),
                exc,
            )
        self.window.reset()
        self.source.reset()
        if self.companion is not None:
            self.companion.reset()
        self._reset_session_state()
        self.link = None

    def _reset_session_state(self) -> None:
        self.ready_at: float | None = None
        self.confirmed: list[K] = []
        self.refused: dict[K, str] = {}
        self.returned: dict[K, str] = {}
        self.waiting_since: float | None = None  # the oldest confirm or message not written
        self.last_activity = time.monotonic()
        self.found_nothing = False
        self.backlog = False  # the last claim filled the window: more may be waiting
        self._kicked = False
        self._published: deque[tuple[int, float]] = deque()  # (tag, when) awaiting confirm

    # -- Handler: broker events -----------------------------------------------------------

    def wants_stop(self) -> bool:
        return self.stop.is_set() or self._past_deadline()

    def on_ready(self) -> None:
        log.info("%s: connected", self.source.name)
        self.ready_at = time.monotonic()
        self._tick_periodically()
        if self.on_ready_hook is not None:
            self.on_ready_hook(self)

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        self.note_waiting()
        self._measure(tag, multiple=multiple)
        for key in self.window.settle(tag, multiple=multiple):
            reason = self.returned.pop(key, None)
            if reason is not None:
                self.refused[key] = reason
                self.counts.returned += 1
            elif ok:
                self.confirmed.append(key)
                self.counts.confirmed += 1
            else:
                self.refused[key] = NACKED
                self.counts.nacked += 1
        self.last_activity = time.monotonic()
        eager = self.source.write_every_s == 0
        if (eager or self.backlog) and self.window.space * 4 >= self.window.size:
            self.kick()  # fill now; else settle at the next periodic tick

    def _measure(self, tag: int, *, multiple: bool) -> None:
        """Publish-to-confirm times of the publishes this confirm covers (metrics)."""
        now, times = time.monotonic(), []
        published = self._published
        while published and (published[0][0] <= tag if multiple else published[0][0] == tag):
            times.append(now - published.popleft()[1])
        if not multiple and not times:  # confirmed out of order: rare
            for entry in published:
                if entry[0] == tag:
                    published.remove(entry)
                    times.append(now - entry[1])
                    break
        metrics.relay_confirmed(self._label, times)

    def on_return(self, key: K, reason: str) -> None:
        """The broker returned the publish of `key` (its confirm follows)."""
        self.returned[key] = reason

    # -- for the source and the companion -------------------------------------------------

    def note_waiting(self) -> None:
        """Something waits to be written (a confirm, a message)."""
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()

    def kick(self) -> None:
        """Tick as soon as the ioloop is free (more room in the window, messages waiting)."""
        if not self._kicked and self.link is not None:
            self._kicked = True
            self.link.call_later(0, self._tick)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` on the ioloop in `delay` seconds, while this session lasts."""
        if self.link is not None and not self.done:
            self.link.call_later(delay, callback)

    def publish_unsettled(self, send: Callable[[L], None]) -> bool:
        """Publish what settles nothing (a request, stream heads) on the session's channel:
        it takes a delivery tag, so later confirms stay aligned. False if no session."""
        if self.link is None or self.done:
            return False
        self.window.add()
        send(self.link)
        return True

    # -- ticks ----------------------------------------------------------------------------

    def _tick_periodically(self) -> None:
        self._tick()
        self.call_later(self.settings.poll_interval_s, self._tick_periodically)

    def _tick(self) -> None:
        self._kicked = False
        if self.done or self.link is None:
            return
        if self.outage is not None and self.outage.waiting() and not self.stop.is_set():
            return
        try:
            self._write()
            if self._finished(time.monotonic()):
                self._close()
            else:
                self._fill()
        except StoreUnavailable as exc:
            if self.outage is None:
                raise
            self.outage.failed(exc)  # raises once the outage lasted past store_give_up_s
            if self.stop.is_set():
                self._close()
        else:
            if self.outage is not None:
                self.outage.over()
        self.report()

    def _close(self) -> None:
        assert self.link is not None
        self.done = True
        self.link.close()

    def _finished(self, now: float) -> bool:
        if self.wants_stop():
            return True
        waiting = self.companion is not None and self.companion.waiting()
        quiet = self.window.empty and not waiting
        if not (quiet and self.found_nothing):
            return False
        if self.until.drained:
            return True
        return self.until.idle is not None and now - self.last_activity >= self.until.idle

    def _past_deadline(self) -> bool:
        return self.until.deadline is not None and time.monotonic() >= self.until.deadline

    def report(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    # -- write: settle what the broker said (and what the companion holds), one txn ------

    def _write(self) -> None:
        """Record confirms and refusals, and the companion's messages, in one short
        transaction: at most once a tick, when something waits and it is due."""
        settle = bool(self.confirmed or self.refused)
        ride = self.companion is not None and self.companion.waiting()
        if not (settle or ride) or not self._write_due():
            return
        marks = settle and self.source.marks(self.confirmed, self.refused)
        then: Callable[[], None] | None = None
        doing = "recording what the broker and the server said" if ride else "recording confirms"
        if marks or ride:
            with self.source.errors(doing), self.engine.begin() as c:
                if marks:
                    self.source.mark(c, self.confirmed, self.refused)
                if ride:
                    assert self.companion is not None
                    then = self.companion.write(c)
        if settle:
            self._settled()
        if then is not None:
            then()
        self.waiting_since = None

    def _write_due(self) -> bool:
        """Whether to write now: as soon as the window, the claims or the companion need
        it, and at least every `write_every_s`; a POS sharing the file meets the lock that
        rarely."""
        now = time.monotonic()
        if self.refused or self.wants_stop():
            return True  # refused keys are held once recorded, before any claim
        if len(self.confirmed) * 4 >= self.window.size:
            return True
        if self.companion is not None and self.companion.urgent():
            return True
        if self.confirmed and self.source.may_reclaim(now):
            return True  # the next claim could take confirmed keys again
        waited = self.waiting_since is not None and now - self.waiting_since
        return waited is not False and waited >= self.source.write_every_s

    def _settle(self) -> None:
        """Record what the broker said, alone (the session ended: no message can be acked)."""
        if not self.confirmed and not self.refused:
            return
        if self.source.marks(self.confirmed, self.refused):
            with self.source.errors("recording broker confirms"), self.engine.begin() as c:
                self.source.mark(c, self.confirmed, self.refused)
        self._settled()

    def _settled(self) -> None:
        self.source.settled(self.confirmed, self.refused)
        self.confirmed, self.refused = [], {}

    # -- claim and publish ----------------------------------------------------------------

    def _fill(self) -> None:
        """Publish claimed messages while the window has room."""
        space = self.window.space
        if space == 0 or self.link is None:
            return
        messages = self.source.claim(space)
        if messages is None:
            return
        claimed = 0
        for message in messages:
            keys = self.source.keys(message)
            self._published.append((self.window.add(*keys), time.monotonic()))
            self.source.publish(self.link, message)
            claimed += len(keys)
        self.counts.published += claimed
        self.found_nothing = claimed == 0
        self.backlog = claimed == space
        if claimed:
            self.last_activity = time.monotonic()
