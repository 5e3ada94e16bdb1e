"""The terminal relay: outbox rows up to the broker; receipts, replays and the feed back.

    stats = run_terminal(engine, settings, stop=stop_event)   # until stopped
    confirmed = drain(engine, settings, timeout=60)           # publish the backlog, return

One `Relay` drives one broker session at a time (`cajasync.broker.links.Link`) on its
loop. Every tick it *settles* what the broker said (one UPDATE for the confirmed rows,
one per refusal reason) and *applies* what the server sent (receipts, replay requests,
change events, snapshot pages and images), both in one short write transaction, then one
ack; publishes the requests that produced (catch-up on a stream gap, the images a snapshot
lacks), and *claims* and publishes more rows while the confirm window has room. A claim
only reads: the relay takes the write lock to write only, so a POS writing the same SQLite
file waits for it as little and as rarely as possible. Database work is short and never
spans a network wait. A lost connection is retried with the broker's reconnect policy;
what was in flight simply stays pending and is published again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Engine

from cajasync.broker.links import Link
from cajasync.broker.ports import TerminalSession, TerminalSessions
from cajasync.broker.rabbitmq import reconnect_policy
from cajasync.core.db import reading
from cajasync.core.identity import TerminalIdentity, load_identity
from cajasync.core.settings import Settings
from cajasync.core.topology import op_routing_key
from cajasync.errors import BrokerUnavailable, InvalidMessage
from inbox.receipts import apply_receipt, apply_replay
from inbox.replica import FeedMemory, FeedMessage, apply_down, coalesce
from outbox.claimer import Claimer
from outbox.claims import OutRow, mark_refused, mark_sent, store_errors
from outbox.inflight import Holds, Window
from schemas.codec import decode_terminal_inbox
from schemas.envelope import Receipt, ReplayRequest
from schemas.feed import ChangeEvent
from schemas.unions import Request, TerminalInbox

log = logging.getLogger(__name__)

RECEIPT_PREFETCH = 200
WRITE_EVERY_S = 0.5
"""How long broker confirms and receipts may wait to be written when nothing asks sooner."""
NACKED = (
    "nacked by the broker: a queue could not take it (full, or a quorum queue without a "
    "majority of its nodes); it is retried later"
)


@dataclass
class RelayStats:
    """Counters of one relay run; `replays_requested` counts replay request messages,
    `down` the feed messages applied (changes, pages, images), `requests` those sent up."""

    published: int = 0
    confirmed: int = 0
    nacked: int = 0
    returned: int = 0
    resent: int = 0
    receipts: int = 0
    acked: int = 0
    rejected: int = 0
    replays_requested: int = 0
    down: int = 0
    requests: int = 0
    reconnects: int = 0

    def copy(self) -> RelayStats:
        return replace(self)


@dataclass(frozen=True)
class Mode:
    """What a run does and when it ends."""

    consume: bool  # apply receipts and replay requests
    resend: bool  # re-publish sent rows without a receipt
    until_drained: bool  # end once nothing is left to publish and nothing is in flight
    until_idle: float | None = None
    deadline: float | None = None  # time.monotonic() at which to end regardless


class Relay:
    """The relay of one terminal: claim, publish, settle; reconnects until it is done."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        mode: Mode,
        *,
        stop: threading.Event | None = None,
        on_progress: Callable[[RelayStats], None] | None = None,
        open_session: TerminalSessions = Link,
    ) -> None:
        self.engine, self.settings, self.mode = engine, settings, mode
        self._open_session = open_session
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.identity = self._load_identity()
        self.stats = RelayStats()
        self.window = Window(settings.publish_window)
        self.feed = FeedMemory(retry_after_s=settings.resend_after_s)
        self.holds = self._holds()
        self.claimer = Claimer(settings, self.window, self.holds, resend=mode.resend)
        self.link: TerminalSession | None = None
        self.done = False
        self._sessions = 0
        self._reset_session_state()
        self._reported = self.stats.copy()

    # -- runs and sessions ----------------------------------------------------------------

    def run(self) -> RelayStats:
        """Relay until done; BrokerUnavailable only if the broker stays away past a limit."""
        while not self.done and not self.wants_stop():
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
            self._report()
        self._sessions += 1
        before = (self.stats.confirmed, self.stats.receipts)
        self.link = self._open_session(
            self.settings, self.identity, self, prefetch=self._prefetch()
        )
        try:
            self.link.run()
        except BrokerUnavailable as exc:
            progressed = (self.stats.confirmed, self.stats.receipts) != before
            if not progressed and not self._was_up_a_while():
                raise  # nothing got through: back off
            log.warning("terminal %s: %s; reconnecting", self.identity.terminal, exc)
        finally:
            self._end_session()

    def _was_up_a_while(self) -> bool:
        """The session worked for longer than the longest back-off: reconnect at once."""
        up_since = self.ready_at
        return up_since is not None and time.monotonic() - up_since >= self.settings.retry_max_s

    def _policy(self) -> tenacity.Retrying:
        """The broker reconnect policy, ended by `stop`, `until_idle` or the deadline."""
        limit = self.mode.until_idle
        if self.mode.deadline is not None:
            limit = max(0.0, self.mode.deadline - time.monotonic())
        what = f"relay of terminal {self.identity.terminal}"
        return reconnect_policy(self.settings, what=what, stop=self.stop, give_up_after=limit)

    def _end_session(self) -> None:
        """Record what the broker confirmed; everything still in flight stays pending."""
        self._settle()
        self.window.reset()
        self.feed.forget()
        self._reset_session_state()
        self.link = None

    def _reset_session_state(self) -> None:
        self.claimer.reset()
        self.ready_at: float | None = None
        self.confirmed: list[int] = []
        self.refused: dict[int, str] = {}
        self.returned: dict[int, str] = {}
        self.inbox: list[tuple[int, TerminalInbox, int]] = []  # (tag, message, body size)
        self.waiting_since: float | None = None  # the oldest confirm or message not written
        self.last_activity = time.monotonic()
        self.found_nothing = False
        self.backlog = False  # the last claim filled the window: more rows may be waiting
        self._kicked = False

    # -- LinkHandler: broker events -------------------------------------------------------

    def wants_stop(self) -> bool:
        return self.stop.is_set() or self._past_deadline()

    def on_ready(self) -> None:
        log.info("terminal %s: relay connected", self.identity.terminal)
        self.ready_at = time.monotonic()
        self._tick_periodically()

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        self._waiting()
        for seq in self.window.settle(tag, multiple=multiple):
            reason = self.returned.pop(seq, None)
            if reason is not None:
                self.refused[seq] = reason
                self.stats.returned += 1
            elif ok:
                self.confirmed.append(seq)
                self.stats.confirmed += 1
            else:
                self.refused[seq] = NACKED
                self.stats.nacked += 1
        self.last_activity = time.monotonic()
        if self.backlog and self.window.space * 4 >= self.window.size:
            self._kick()  # more rows wait: fill now; else settle at the next periodic tick

    def on_return(self, seq: int, reason: str) -> None:
        self.returned[seq] = reason

    def on_message(self, tag: int, routing_key: str, body: bytes) -> None:
        idle_since, self.last_activity = self.last_activity, time.monotonic()
        assert self.link is not None
        try:
            message = decode_terminal_inbox(body)
        except InvalidMessage as exc:
            log.warning(
                "terminal %s: dropping message %s: %s", self.identity.terminal, routing_key, exc
            )
            self.link.reject(tag)
            return
        if isinstance(message, Receipt | ReplayRequest) and (
            message.terminal != self.identity.terminal
        ):
            log.warning(
                "terminal %s: dropping a %s meant for terminal %s",
                self.identity.terminal,
                type(message).__name__,
                message.terminal,
            )
            self.link.reject(tag)
            return
        if isinstance(message, ChangeEvent) and not message.changes:
            self.last_activity = idle_since  # stream heads: the feed's pulse, not activity
        self.inbox.append((tag, message, len(body)))
        self._waiting()
        if len(self.inbox) * 2 >= RECEIPT_PREFETCH:
            self._kick()

    def _waiting(self) -> None:
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()

    # -- ticks ----------------------------------------------------------------------------

    def _tick_periodically(self) -> None:
        self._tick()
        if self.link is not None and not self.done:
            self.link.call_later(self.settings.poll_interval_s, self._tick_periodically)

    def _kick(self) -> None:
        """Tick as soon as the ioloop is free (more room in the window, receipts waiting)."""
        if not self._kicked and self.link is not None:
            self._kicked = True
            self.link.call_later(0, self._tick)

    def _tick(self) -> None:
        self._kicked = False
        if self.done or self.link is None:
            return
        now = time.monotonic()
        self._write()
        if self._finished(now):
            self.done = True
            self.link.close()
        else:
            self._fill()
        self._report()

    def _finished(self, now: float) -> bool:
        if self.wants_stop():
            return True
        quiet = self.window.empty and not self.inbox
        if self.mode.until_drained and quiet and self.found_nothing:
            return True
        idle = self.mode.until_idle
        return idle is not None and quiet and now - self.last_activity >= idle

    def _past_deadline(self) -> bool:
        return self.mode.deadline is not None and time.monotonic() >= self.mode.deadline

    def _report(self) -> None:
        if self.on_progress is not None and self.stats != self._reported:
            self._reported = self.stats.copy()
            self.on_progress(self._reported.copy())

    # -- write: what the broker and the server said, one transaction per tick -------------

    def _write(self) -> None:
        """Record confirms and refusals and apply server messages in one short transaction.

        The only time the relay holds the database's write lock (claims only read): at most
        once a tick, when something waits and `_write_due` says it is time.
        """
        settle = bool(self.confirmed or self.refused)
        apply = bool(self.inbox) and self.link is not None
        if not (settle or apply) or not self._write_due():
            return
        with (
            store_errors(self.identity.terminal, "recording what the broker and server said"),
            self.engine.begin() as connection,
        ):
            if settle:
                self._mark(connection)
            applied = self._apply(connection) if apply else None
        if settle:
            self._settled()
        if applied is not None:
            self._acknowledge(*applied)
        self.waiting_since = None

    def _write_due(self) -> bool:
        """Whether to write now: as soon as the window, the claims or the feed need it, and
        at least every WRITE_EVERY_S; a POS sharing the file meets the lock that rarely."""
        now = time.monotonic()
        if self.refused or self.wants_stop():
            return True  # refused rows are held once recorded, before any claim
        if len(self.confirmed) * 4 >= self.window.size or len(self.inbox) * 2 >= RECEIPT_PREFETCH:
            return True
        if any(not isinstance(message, Receipt) for _tag, message, _size in self.inbox):
            return True  # change events and replay requests do not wait
        if self.confirmed and self.claimer.may_reclaim(now):
            return True  # the next claim could take confirmed rows again
        return self.waiting_since is not None and now - self.waiting_since >= WRITE_EVERY_S

    def _settle(self) -> None:
        """Record what the broker said, alone (the session ended: no message can be acked)."""
        if not self.confirmed and not self.refused:
            return
        with (
            store_errors(self.identity.terminal, "recording broker confirms"),
            self.engine.begin() as connection,
        ):
            self._mark(connection)
        self._settled()

    # -- settle: what the broker said -----------------------------------------------------

    def _mark(self, connection: sa.Connection) -> None:
        """Mark confirmed rows sent and refused rows pending with why."""
        mark_sent(connection, self.confirmed, now=time.time())
        mark_refused(connection, self.refused)

    def _settled(self) -> None:
        """Once committed: confirmed rows leave their holds, refused ones are held."""
        self.holds.release(self.confirmed)
        self._hold_refused()
        self.confirmed, self.refused = [], {}

    def _hold_refused(self) -> None:
        if not self.refused:
            return
        now = time.monotonic()
        for seq in self.refused:
            self.claimer.held_until(self.holds.hold(seq, now))
        for reason, count in Counter(self.refused.values()).items():
            log.warning(
                "terminal %s: %d op(s) not accepted: %s", self.identity.terminal, count, reason
            )

    # -- apply: what the server said ------------------------------------------------------

    def _apply(self, connection: sa.Connection) -> tuple[list[Request], int | None]:
        """Apply buffered server messages; the requests they ask for and the replay start.

        Receipts and replay requests settle the outbox; change events, snapshot pages and
        images go to the replica (inbox/replica.py; adjacent change events as one batch),
        whose catch-up and image requests are published once the transaction committed.
        """
        replay_from: int | None = None
        requests: list[Request] = []
        feed: list[tuple[FeedMessage, int]] = []
        for _tag, message, size in self.inbox:
            if isinstance(message, Receipt):
                self._count_receipt(apply_receipt(connection, message))
            elif isinstance(message, ReplayRequest):
                apply_replay(connection, message)
                self.stats.replays_requested += 1
                replay_from = min(replay_from or message.from_seq, message.from_seq)
            else:
                feed.append((message, size))
        for fed, size in coalesce(feed):
            requests += apply_down(connection, fed, self.identity, size=size, memory=self.feed)
        self.stats.down += len(feed)
        return requests, replay_from

    def _acknowledge(self, requests: list[Request], replay_from: int | None) -> None:
        """Once committed: ack the applied messages at once, send what they asked for."""
        assert self.link is not None
        self.link.ack(self.inbox[-1][0], multiple=True)
        self.inbox = []
        if replay_from is not None:
            self.claimer.rewind(replay_from)
        for request in requests:
            self._send_request(request)

    def _count_receipt(self, counts: tuple[int, int]) -> None:
        self.stats.receipts += 1
        self.stats.acked += counts[0]
        self.stats.rejected += counts[1]

    # -- claim and publish ----------------------------------------------------------------

    def _fill(self) -> None:
        """Publish claimed rows while the window has room.

        The claim only reads: it takes no write lock, so a POS transaction that reads before
        it writes is never caught upgrading its lock while the relay looks for rows.
        """
        space = self.window.space
        if space == 0 or self.link is None:
            return
        with (
            store_errors(self.identity.terminal, "claiming outbox rows"),
            reading(self.engine) as connection,
        ):
            stale, fresh = self.claimer.claim(connection, space)
        for row in stale:
            self._publish(row)
            self.stats.resent += 1
        for row in fresh:
            self._publish(row)
        self.found_nothing = not stale and not fresh
        self.backlog = len(stale) + len(fresh) == space

    def _publish(self, row: OutRow) -> None:
        assert self.link is not None
        self.window.add(row.seq)
        terminal = self.identity.terminal
        self.link.publish(
            op_routing_key(terminal, row.topic),
            row.body,
            message_id=f"{row.op_id}/{row.version}",
            headers={"terminal": terminal, "seq": row.seq, "topic": row.topic},
        )
        self.stats.published += 1
        self.last_activity = time.monotonic()

    def _send_request(self, request: Request) -> None:
        """Publish a request on the same channel: it takes a delivery tag but no outbox seq."""
        assert self.link is not None
        self.window.add_untracked()
        self.link.publish_request(request)
        self.stats.requests += 1

    # -- setup ----------------------------------------------------------------------------

    def _load_identity(self) -> TerminalIdentity:
        with self.engine.connect() as connection:
            return load_identity(connection)

    def _holds(self) -> Holds:
        """Back-off for refused rows: doubling up to `resend_after_s`; a drain never retries."""
        if self.mode.until_drained:
            return Holds(math.inf, math.inf)
        return Holds(self.settings.retry_initial_s, self.settings.resend_after_s)

    def _prefetch(self) -> int | None:
        return RECEIPT_PREFETCH if self.mode.consume else None


def run_terminal(
    engine: Engine,
    settings: Settings,
    *,
    until_idle: float | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[RelayStats], None] | None = None,
    open_session: TerminalSessions = Link,
) -> RelayStats:
    """Relay ops up, apply receipts, replay requests and the down feed (change events,
    snapshots, images) until `stop` is set or, with `until_idle`, nothing was published or
    received for that many seconds.

    An unreachable broker is retried with back-off for as long as `stop` is unset;
    with `until_idle`, BrokerUnavailable is raised once it stays away that long.
    `open_session` opens the broker sessions (RabbitMQ; `StubBroker.terminal_link` in tests).
    """
    mode = Mode(consume=True, resend=True, until_drained=False, until_idle=until_idle)
    relay = Relay(
        engine, settings, mode, stop=stop, on_progress=on_progress, open_session=open_session
    )
    return relay.run()


def drain(
    engine: Engine,
    settings: Settings,
    *,
    timeout: float | None = None,
    on_progress: Callable[[RelayStats], None] | None = None,
) -> int:
    """Publish every pending row until all are broker-confirmed (sent); return how many were.

    Receipts are not consumed. Rows the broker refuses (unroutable, nacked) stay pending
    with their `last_error` and are not retried by this call. After `timeout` seconds it
    returns what was confirmed so far (BrokerUnavailable if the broker is unreachable then).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    mode = Mode(consume=False, resend=False, until_drained=True, deadline=deadline)
    return Relay(engine, settings, mode, on_progress=on_progress).run().confirmed
