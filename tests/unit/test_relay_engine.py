"""The relay engine's own logic, on a fake broker session and a source of plain keys.

The fake runs the engine's ioloop callbacks in order (delays ignored) and answers every
publish with a confirm after each callback; what it answers is up to the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
import sqlalchemy as sa

from cajasync.broker.confirms import Window
from cajasync.core.settings import Settings
from cajasync.errors import BrokerUnavailable
from outbox.relay import NACKED, Handler, Relay, Until

MAX_CALLBACKS = 10_000


class FakeBroker:
    """Answers publishes: acks unless told to nack or return a key once; may drop the
    connection after a number of publishes in the first session."""

    def __init__(self, *, nack: set[int] = frozenset(), lose_after: int | None = None) -> None:
        self.nack_once = set(nack)
        self.returns: dict[int, str] = {}
        self.lose_after = lose_after
        self.published: list[list[int | None]] = []  # per session, None: an unsettled publish

    def connect(self, handler: Handler) -> FakeSession:
        self.published.append([])
        return FakeSession(self, handler, first=len(self.published) == 1)


class FakeSession:
    def __init__(self, broker: FakeBroker, handler: Handler, *, first: bool) -> None:
        self.broker, self.handler, self.first = broker, handler, first
        self.scheduled: list[Callable[[], None]] = []
        self.unconfirmed: list[tuple[int, int | None]] = []  # (tag, key)
        self.closed = False

    def run(self) -> None:
        self.handler.on_ready()
        self._confirm()
        for _ in range(MAX_CALLBACKS):
            if self.closed:
                return
            self.scheduled.pop(0)()
            self._confirm()
        raise AssertionError("the relay never closed its session")

    def close(self) -> None:
        self.closed = True

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.scheduled.append(callback)

    def publish(self, key: int | None) -> None:
        published = self.broker.published[-1]
        lose_after = self.broker.lose_after
        if self.first and lose_after is not None and len(published) >= lose_after:
            raise BrokerUnavailable("connection lost")
        published.append(key)
        self.unconfirmed.append((len(published), key))

    def _confirm(self) -> None:
        on_return = self.handler.on_return
        for tag, key in self.unconfirmed:
            if key in self.broker.returns:
                on_return(key, self.broker.returns.pop(key))
            ok = key not in self.broker.nack_once
            self.broker.nack_once.discard(key)  # type: ignore[arg-type]
            self.handler.on_confirm(tag, multiple=False, ok=ok)
        self.unconfirmed = []


class KeySource:
    """Keys 1..n to publish; marked ones are done, refused ones go again."""

    name = "test relay"
    write_every_s = 0.0

    def __init__(self, count: int, *, window: int = 100) -> None:
        self.pending = set(range(1, count + 1))
        self.window: Window[int] = Window(window)
        self.events: list[tuple[str, Any]] = []

    def errors(self, doing: str) -> AbstractContextManager[None]:
        return nullcontext()

    def claim(self, space: int) -> list[int]:
        return [key for key in sorted(self.pending) if key not in self.window][:space]

    def keys(self, message: int) -> tuple[int]:
        return (message,)

    def publish(self, session: FakeSession, message: int) -> None:
        session.publish(message)

    def marks(self, confirmed: list[int], refused: dict[int, str]) -> bool:
        return True

    def mark(
        self, connection: sa.Connection, confirmed: list[int], refused: dict[int, str]
    ) -> None:
        self.events.append(("mark", (sorted(confirmed), dict(refused))))
        self.pending -= set(confirmed)

    def settled(self, confirmed: list[int], refused: dict[int, str]) -> None:
        self.events.append(("settled", (sorted(confirmed), dict(refused))))

    def may_reclaim(self, now: float) -> bool:
        return False

    def reset(self) -> None:
        self.events.append(("reset", None))


@pytest.fixture
def db() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://")
    yield engine
    engine.dispose()


def relay(
    source: KeySource, broker: FakeBroker, db: sa.Engine, **settings: Any
) -> Relay[int, int, FakeSession]:
    return Relay(
        source,
        db,
        Settings(**settings),
        connect=broker.connect,
        until=Until(drained=True),
    )


def test_every_key_is_published_once_and_marked_when_the_broker_confirms_it(
    db: sa.Engine,
) -> None:
    source, broker = KeySource(5), FakeBroker()

    counts = relay(source, broker, db).run()

    assert broker.published == [[1, 2, 3, 4, 5]]
    assert (counts.published, counts.confirmed, source.pending) == (5, 5, set())


def test_the_window_bounds_what_is_in_flight(db: sa.Engine) -> None:
    source, broker = KeySource(5, window=2), FakeBroker()

    relay(source, broker, db).run()

    marked = [keys for event, (keys, _refused) in _marks(source)]
    assert broker.published == [[1, 2, 3, 4, 5]]
    assert all(len(keys) <= 2 for keys in marked)


def test_a_nacked_key_is_recorded_as_refused_then_settled_and_published_again(
    db: sa.Engine,
) -> None:
    source, broker = KeySource(3), FakeBroker(nack={2})

    counts = relay(source, broker, db).run()

    assert ("mark", ([1, 3], {2: NACKED})) in source.events
    first_mark = source.events.index(("mark", ([1, 3], {2: NACKED})))
    assert source.events[first_mark + 1] == ("settled", ([1, 3], {2: NACKED}))
    assert broker.published == [[1, 2, 3, 2]]
    assert (counts.nacked, counts.confirmed, source.pending) == (1, 3, set())


def test_a_returned_key_is_refused_with_the_brokers_reason_though_it_is_acked(
    db: sa.Engine,
) -> None:
    source, broker = KeySource(2), FakeBroker()
    broker.returns[2] = "unroutable"

    counts = relay(source, broker, db).run()

    assert ("mark", ([1], {2: "unroutable"})) in source.events
    assert broker.published == [[1, 2, 2]]
    assert (counts.returned, counts.confirmed, source.pending) == (1, 2, set())


def test_keys_in_flight_when_the_connection_drops_go_again_in_the_next_session(
    db: sa.Engine,
) -> None:
    source, broker = KeySource(4), FakeBroker(lose_after=2)

    counts = relay(source, broker, db, retry_initial_s=0.01, retry_max_s=0.01).run()

    assert broker.published[0] == [1, 2]
    assert sorted(k for k in broker.published[1] if k is not None) == [1, 2, 3, 4]
    assert ("reset", None) in source.events
    assert (counts.confirmed, counts.reconnects, source.pending) == (4, 1, set())


def test_a_publish_that_settles_nothing_keeps_later_confirms_on_their_keys(
    db: sa.Engine,
) -> None:
    source, broker = KeySource(3, window=2), FakeBroker(nack={3})
    engine = relay(source, broker, db)

    def request_once_ready(ready: Relay[int, int, FakeSession]) -> None:
        ready.publish_unsettled(lambda session: session.publish(None))

    engine.on_ready_hook = request_once_ready
    counts = engine.run()

    assert broker.published == [[1, 2, None, 3, 3]]
    assert ("mark", ([], {3: NACKED})) in source.events
    assert (counts.published, counts.confirmed, counts.nacked) == (4, 3, 1)


def _marks(source: KeySource) -> list[tuple[str, Any]]:
    return [event for event in source.events if event[0] == "mark"]
