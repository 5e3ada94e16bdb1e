"""The terminal service: outbox rows up to the broker; receipts, replays and the feed back.

    stats = run_terminal(engine, settings, stop=stop_event)   # until stopped
    confirmed = drain(engine, settings, timeout=60)           # publish the backlog, return

Composed of the two wings on ONE broker session (a `cajasync.broker.ports.TerminalSession`,
on pika's ioloop): the up half is the relay engine (`outbox.relay.Relay`) with the terminal's
outbox as its source (`outbox.terminal_source`), the down half the terminal's inbox
consumer (`inbox.terminal_consumer`). Every tick the engine *settles* what the broker
said and the consumer *applies* what the server sent (receipts, replay requests, change
events, snapshot pages and images), both in one short write transaction, then one ack;
the requests that produced go out on the same channel, and more rows are *claimed* and
published while the confirm window has room. A claim only reads: the relay takes the
write lock to write only, so a POS writing the same SQLite file waits for it as little and
as rarely as possible. Database work is short and never spans a network wait. A lost
connection is retried with the broker's reconnect policy; what was in flight simply stays
pending and is published again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy.engine import Engine

from cajasync.broker.links import Link
from cajasync.broker.ports import TerminalSession, TerminalSessions
from cajasync.core.counters import counters_text
from cajasync.core.identity import TerminalIdentity, load_identity
from cajasync.core.settings import Settings
from cajasync.core.topology import StreamStart, terminal_streams
from cajasync.processes.metrics import TerminalGauges, exposed, terminal_counters
from cajasync.processes.till_status import StatusReporter
from inbox.stream_offsets import stream_starts
from inbox.terminal_consumer import RECEIPT_PREFETCH, ConsumerStats, Taken, TerminalConsumer
from outbox.claims import OutRow
from outbox.relay import Counts, Handler, Relay, Until
from outbox.terminal_source import TerminalSource
from schemas.status import TerminalStatus
from schemas.unions import Request


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

    def __str__(self) -> str:
        return counters_text(self)


class TerminalService:
    """The relay and, when it consumes, the inbox consumer of one terminal, on one session."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        consume: bool,
        resend: bool,
        until: Until,
        stop: threading.Event | None = None,
        on_progress: Callable[[RelayStats], None] | None = None,
        connect: TerminalSessions = Link,
    ) -> None:
        self.settings, self.consume, self._connect = settings, consume, connect
        self.engine = engine
        self.identity = _load_identity(engine)
        self.on_progress = on_progress
        self.source = TerminalSource(
            engine, settings, self.identity.terminal, resend=resend, retry=not until.drained
        )
        self.consumer = TerminalConsumer(
            self.identity, settings, self, on_replay=self.source.rewind
        )
        # a running till reports its status (processes/till_status.py); a drain does not
        self.status = (
            StatusReporter(engine, self.identity, settings, self._send_status) if consume else None
        )
        self.relay: Relay[int, OutRow, TerminalSession] = Relay(
            self.source,
            engine,
            settings,
            connect=self._session,
            until=until,
            stop=stop,
            companion=self.consumer if consume else None,
            on_ready=self._on_ready,
            on_progress=self._report,
        )
        self._reported = self.stats()
        self._count = terminal_counters()

    def run(self) -> RelayStats:
        self.relay.run()
        return self.stats()

    def stats(self) -> RelayStats:
        return relay_stats(self.relay.counts, self.source.resent, self.consumer.stats)

    def _session(self, _relay: Handler) -> TerminalSession:
        prefetch = RECEIPT_PREFETCH if self.consume else None
        return self._connect(self.settings, self.identity, _Events(self), prefetch=prefetch)

    def _on_ready(self, _relay: object) -> None:
        if self.status is not None:
            self.status.reset()  # a new session: the server hears of it at its first tick

    def _send_status(self, status: TerminalStatus) -> bool:
        return self.relay.publish_unsettled(lambda link: link.publish_request(status))

    def _report(self) -> None:
        if self.status is not None:
            self.status.tick()
        stats = self.stats()
        self._count(stats)
        if self.on_progress is not None and stats != self._reported:
            self._reported = stats
            self.on_progress(stats.copy())

    # -- Replies: the consumer's side of the session ------------------------------------

    def ack(self, tag: int, *, multiple: bool) -> None:
        assert self.relay.link is not None
        self.relay.link.ack(tag, multiple=multiple)

    def reject(self, tag: int) -> None:
        assert self.relay.link is not None
        self.relay.link.reject(tag)

    def send_request(self, request: Request) -> None:
        self.relay.publish_unsettled(lambda link: link.publish_request(request))

    # -- a delivery on the terminal's queue -----------------------------------------------

    def stream_starts(self) -> dict[str, StreamStart]:
        with self.engine.begin() as connection:
            return stream_starts(connection, terminal_streams(self.identity.location))

    def on_message(
        self,
        tag: int,
        routing_key: str,
        body: bytes,
        *,
        stream: str | None = None,
        offset: int | None = None,
    ) -> None:
        taken = self.consumer.take(tag, routing_key, body, stream=stream, offset=offset)
        if taken is not Taken.PULSE:
            self.relay.last_activity = time.monotonic()
        if taken is Taken.DROPPED:
            return
        self.relay.note_waiting()
        if self.consumer.full:
            self.relay.kick()


class _Events:
    """The session's handler: confirms and returns to the relay, deliveries to the consumer."""

    def __init__(self, service: TerminalService) -> None:
        self._relay, self._service = service.relay, service

    def wants_stop(self) -> bool:
        return self._relay.wants_stop()

    def on_ready(self) -> None:
        self._relay.on_ready()

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        self._relay.on_confirm(tag, multiple=multiple, ok=ok)

    def on_return(self, seq: int, reason: str) -> None:
        self._relay.on_return(seq, reason)

    def on_message(self, tag: int, routing_key: str, body: bytes) -> None:
        self._service.on_message(tag, routing_key, body)

    def stream_starts(self) -> dict[str, StreamStart]:
        return self._service.stream_starts()

    def on_stream_message(
        self, tag: int, stream: str, offset: int, routing_key: str, body: bytes
    ) -> None:
        self._service.on_message(tag, routing_key, body, stream=stream, offset=offset)


def relay_stats(counts: Counts, resent: int, consumed: ConsumerStats) -> RelayStats:
    return RelayStats(
        published=counts.published,
        confirmed=counts.confirmed,
        nacked=counts.nacked,
        returned=counts.returned,
        resent=resent,
        receipts=consumed.receipts,
        acked=consumed.acked,
        rejected=consumed.rejected,
        replays_requested=consumed.replays_requested,
        down=consumed.down,
        requests=consumed.requests,
        reconnects=counts.reconnects,
    )


def _load_identity(engine: Engine) -> TerminalIdentity:
    with engine.connect() as connection:
        return load_identity(connection)


def run_terminal(
    engine: Engine,
    settings: Settings,
    *,
    until_idle: float | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[RelayStats], None] | None = None,
    connect: TerminalSessions = Link,
    metrics_port: int | None = None,
) -> RelayStats:
    """Relay ops up, apply receipts, replay requests and the down feed (change events,
    snapshots, images) until `stop` is set or, with `until_idle`, nothing was published or
    received for that many seconds. With `metrics_port`, Prometheus metrics are served
    there meanwhile (processes/metrics.py).

    An unreachable broker is retried with back-off for as long as `stop` is unset;
    with `until_idle`, BrokerUnavailable is raised once it stays away that long.
    """
    service = TerminalService(
        engine,
        settings,
        consume=True,
        resend=True,
        until=Until(idle=until_idle),
        stop=stop,
        on_progress=on_progress,
        connect=connect,
    )
    with exposed(metrics_port, [TerminalGauges(engine, service.identity.terminal)]):
        return service.run()


def drain(
    engine: Engine,
    settings: Settings,
    *,
    timeout: float | None = None,
    on_progress: Callable[[RelayStats], None] | None = None,
    connect: TerminalSessions = Link,
) -> int:
    """Publish every pending row until all are broker-confirmed (sent); return how many were.

    Receipts are not consumed. Rows the broker refuses (unroutable, nacked) stay pending
    with their `last_error` and are not retried by this call. After `timeout` seconds it
    returns what was confirmed so far (BrokerUnavailable if the broker is unreachable then).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    service = TerminalService(
        engine,
        settings,
        consume=False,
        resend=False,
        until=Until(drained=True, deadline=deadline),
        on_progress=on_progress,
        connect=connect,
    )
    return service.run().confirmed
