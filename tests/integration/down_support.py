"""Helpers for the end-to-end down-flow tests: the server's loops and terminals in threads,
and the state of the catalog and of a replica in one comparable shape."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core import topology
from cajasync.core.db import make_engine
from cajasync.core.identity import TerminalIdentity
from cajasync.core.server_tables import catalog_records, change_log, stream_heads
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import replica
from cajasync.processes.pull import PullResult, pull
from cajasync.processes.server import ServerStats, serve
from cajasync.processes.terminal import RelayStats, run_terminal
from cajasync.processes.terminal_init import init_terminal
from inbox.entitlement import Requester, streams_for
from inbox.replica import positions
from inbox.stream_offsets import save_offsets, stored_offsets
from schemas.feed import split_stream
from schemas.records import Record, for_terminal
from schemas.topics import DOWN_TOPICS
from tests.integration.relay_support import blocking_channel, private_vhost
from tests.waiting import WAIT_S

PULL_TIMEOUT_S = 60.0
VHOST_ATTEMPTS = 30  # rabbitmqctl fails while another suite restarts the broker app

_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)


class Entry(NamedTuple):
    """One (topic, key) as the catalog or a replica holds it: a tombstone has no record."""

    version: int
    deleted: bool
    record: Record | None


State = dict[tuple[str, str], Entry]


# -- the broker ------------------------------------------------------------------------------


@contextlib.contextmanager
def vhost_for(broker_url: str, purpose: str) -> Iterator[str | None]:
    """`private_vhost`, retried for a while (the broker app may be restarting)."""
    for _attempt in range(VHOST_ATTEMPTS):
        with private_vhost(broker_url, purpose) as url:
            if url is not None:
                yield url
                return
        time.sleep(1.0)
    yield None


def purge(url: str, *queues: str) -> None:
    """Declare the server topology and empty the given queues."""
    with blocking_channel(url) as channel:
        topology.declare_server(channel)
        for queue in queues:
            channel.queue_purge(queue)


def purge_terminal_queue(url: str, till: Terminal) -> int:
    """Lose every change waiting for a till: drop its queue's messages and move its offset in
    each stream it reads past the stream's last event, as a lost segment would; how many
    messages it misses."""
    with blocking_channel(url) as channel:
        lost = int(channel.queue_purge(topology.terminal_queue(till.id)).method.message_count)
        starts = {}
        with till.engine.connect() as connection:
            stored = stored_offsets(connection)
        for stream in topology.terminal_streams(till.identity.location):
            last = last_offset(url, stream)
            if last > stored.get(stream, -1):
                lost += last - stored.get(stream, -1)
                starts[stream] = last
    with till.engine.begin() as connection:
        save_offsets(connection, starts)
    return lost


def last_offset(url: str, stream: str) -> int:
    """The offset of a stream's last event (-1 when it has none): read from its last chunk,
    each acked (a stream refuses the nacks a cancel sends for unacked ones)."""
    found = [-1]

    def seen(channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        found.append(int(properties.headers["x-stream-offset"]))
        channel.basic_ack(method.delivery_tag)

    with blocking_channel(url) as channel:
        channel.basic_qos(prefetch_count=1000)
        channel.basic_consume(stream, seen, arguments={"x-stream-offset": "last"})
        channel.connection.process_data_events(time_limit=0.5)
    return max(found)


def delete_terminal_queues(url: str, terminals: Sequence[str]) -> None:
    with blocking_channel(url) as channel:
        for terminal in terminals:
            channel.queue_delete(topology.terminal_queue(terminal))


# -- loops in threads ------------------------------------------------------------------------


class Loop:
    """A run loop in a daemon thread with its own stop event; its result or error."""

    def __init__(self, name: str, body: Callable[[threading.Event], object]) -> None:
        self.name = name
        self.stop_event = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(body,), name=f"test-{name}", daemon=True
        )
        self._thread.start()

    def _run(self, body: Callable[[threading.Event], object]) -> None:
        try:
            self.result = body(self.stop_event)
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        """Fail at once if the loop died."""
        if self.error is not None:
            raise AssertionError(f"{self.name} failed") from self.error
        if not self._thread.is_alive() and not self.stop_event.is_set():
            raise AssertionError(f"{self.name} ended by itself")

    def finish(self) -> object:
        """Stop the loop and return what it returned (its error, if it failed)."""
        self.stop_event.set()
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), f"{self.name} did not stop"
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class Server:
    """A server store and `serve` (ingest, requests, feed relay) running on it."""

    engine: Engine
    settings: Settings
    loop: Loop | None = None

    def start(self) -> Loop:
        assert self.loop is None or self.loop.stop_event.is_set()
        self.loop = Loop("server", lambda stop: serve(self.engine, self.settings, stop=stop))
        return self.loop

    def finish(self) -> ServerStats:
        assert self.loop is not None
        stats = self.loop.finish()
        assert isinstance(stats, ServerStats)
        return stats

    def unpublished(self) -> int:
        """Changes the feed relay has not had confirmed by the broker yet."""
        with self.engine.connect() as connection:
            query = sa.select(sa.func.count()).where(change_log.c.published_at.is_(None))
            return int(connection.execute(query.select_from(change_log)).scalar_one())

    def changes(self) -> int:
        with self.engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(change_log)
            return int(connection.execute(query).scalar_one())

    def heads(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(stream_heads.c.stream, stream_heads.c.seq))
            return {row.stream: row.seq for row in rows}

    def streams_of(self, identity: TerminalIdentity, topic: str) -> list[str]:
        requester = Requester(identity.terminal, identity.location, identity.pos, identity.kind)
        return streams_for(requester, topic)

    def state(self, identity: TerminalIdentity, topics: Sequence[str] = DOWN_TOPICS) -> State:
        """What `identity` is entitled to of `topics`, tombstones included (of `mesas`, its
        kind's: tables for a restaurant, rooms for a hotel)."""
        c = catalog_records.c
        state: State = {}
        with self.engine.connect() as connection:
            for topic in topics:
                scopes = [split_stream(s)[1] for s in self.streams_of(identity, topic)]
                if not scopes:
                    continue
                rows = connection.execute(
                    sa.select(c.key, c.version, c.deleted, c.body).where(
                        c.topic == topic, c.scope.in_(scopes)
                    )
                )
                entries = {(topic, row.key): _entry(row) for row in rows}
                state.update(
                    {
                        key: entry
                        for key, entry in entries.items()
                        if entry.record is None or for_terminal(entry.record, identity.kind)
                    }
                )
        return state


@dataclass
class Terminal:
    """An initialised terminal database; `run()` starts its `run_terminal` in a thread."""

    identity: TerminalIdentity
    engine: Engine
    settings: Settings
    loops: list[Loop] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.identity.terminal

    def pull(
        self,
        topics: Sequence[str] | None,
        *,
        images: bool = False,
        full: bool = False,
        keys: Sequence[str] = (),
        location: str | None = None,
    ) -> PullResult:
        result = pull(
            self.engine,
            self.settings,
            topics,
            images=images,
            full=full,
            keys=keys,
            location=location,
            timeout=PULL_TIMEOUT_S,
        )
        assert result.status == "done", result
        return result

    def run(self) -> Loop:
        loop = Loop(
            f"terminal {self.id}", lambda stop: run_terminal(self.engine, self.settings, stop=stop)
        )
        self.loops.append(loop)
        return loop

    @staticmethod
    def finish(loop: Loop) -> RelayStats:
        stats = loop.finish()
        assert isinstance(stats, RelayStats)
        return stats

    def state(self, topics: Sequence[str] = DOWN_TOPICS) -> State:
        """The replica's rows of `topics`, tombstones included."""
        r = replica.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(r.topic, r.key, r.version, r.deleted, r.body).where(
                    r.topic.in_(list(topics))
                )
            )
            return {(row.topic, row.key): _entry(row) for row in rows}

    def positions(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return positions(connection)

    def stop_all(self) -> None:
        for loop in self.loops:
            if not loop.stop_event.is_set():
                loop.stop_event.set()
        for loop in self.loops:
            with contextlib.suppress(BaseException):
                loop.finish()


def make_terminal(path: str, identity: TerminalIdentity, settings: Settings) -> Terminal:
    """Initialise a terminal database and declare its queue (bound to its scopes)."""
    return Terminal(identity, init_terminal(path, identity, settings), settings)


def live(state: State, topic: str | None = None) -> dict[tuple[str, str], Record]:
    """The live records of a state (of one topic, or all)."""
    return {
        key: entry.record
        for key, entry in state.items()
        if not entry.deleted and entry.record is not None and (topic is None or key[0] == topic)
    }


def differences(server: State, terminal: State, *, tombstones: bool = True) -> list[str]:
    """What differs between the catalog and a replica (empty: identical), for messages.

    A tombstone of a record the terminal never held is no difference: a change the
    chain's stream carries to every till (a hotel room's, read by a restaurant) leaves one
    where the server sends this terminal nothing. Neither holds the record."""
    terminal = {k: e for k, e in terminal.items() if not (e.deleted and k not in server)}
    if not tombstones:
        server = {k: e for k, e in server.items() if not e.deleted}
        terminal = {k: e for k, e in terminal.items() if not e.deleted}
    found: list[str] = []
    for key in sorted(server.keys() | terminal.keys()):
        want, got = server.get(key), terminal.get(key)
        if want != got:
            found.append(f"{key}: server {_short(want)}, replica {_short(got)}")
    return found


def _entry(row: Any) -> Entry:
    record = None if row.body is None else _decoder.decode(row.body)
    return Entry(row.version, row.deleted, record)


def _short(entry: Entry | None) -> str:
    if entry is None:
        return "none"
    return f"v{entry.version}{' deleted' if entry.deleted else ''}"


def make_server(url: str, settings: Settings) -> Server:
    return Server(make_engine(url), settings)
