"""The server feed relay: the catalog's change log to `cajasync.down` (real RabbitMQ)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.server_tables import change_log
from cajasync.core.settings import Settings
from outbox import catalog
from outbox.feed_relay import (
    MAX_EVENT_CHANGES,
    ChangeRow,
    FeedStats,
    events_of,
    published_heads,
    run_feed_relay,
)
from schemas.codec import decode_down, encode
from schemas.feed import Change, ChangeEvent
from schemas.records import Customer, PaymentMethod, Product, StockLevel
from tests.integration.relay_support import (
    CuttableProxy,
    blocking_channel,
    declare_server_topology,
    private_vhost,
    rabbitmqctl_missing,
)
from tests.waiting import wait_for

WAIT_S = 60.0


@pytest.fixture(scope="module")
def feed_url(broker_url: str) -> Iterator[str]:
    """A private vhost: no other test's or server's change events reach our taps."""
    with private_vhost(broker_url, "feedrelay") as url:
        if url is None:
            rabbitmqctl_missing("the feed relay tests")
            return
        declare_server_topology(url)
        yield url


@pytest.fixture
def feed_settings(settings: Settings, feed_url: str) -> Settings:
    return settings.with_overrides(broker_url=feed_url)


@pytest.fixture
def engine(server_db_url: str) -> Iterator[Engine]:
    engine = make_engine(server_db_url)
    yield engine
    engine.dispose()


class Tap:
    """A private queue on `cajasync.down` bound to some change routing keys."""

    def __init__(self, channel: Any, *keys: str) -> None:
        self.channel = channel
        self.queue = f"test.feed.{uuid.uuid4().hex[:8]}"
        channel.queue_declare(self.queue, exclusive=True, auto_delete=True)
        for key in keys:
            channel.queue_bind(self.queue, topology.DOWN_EXCHANGE, routing_key=key)

    def drain(self, changes: int) -> list[tuple[Any, Any, ChangeEvent]]:
        """Messages until they hold at least `changes` changes, as (method, properties, event)."""
        taken: list[tuple[Any, Any, ChangeEvent]] = []
        deadline = time.monotonic() + WAIT_S
        while sum(len(event.changes) for _m, _p, event in taken) < changes:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                assert time.monotonic() < deadline, f"tap got {len(taken)} messages"
                self.channel.connection.sleep(0.05)
                continue
            event = decode_down(body)
            assert isinstance(event, ChangeEvent)
            taken.append((method, properties, event))
        return taken

    def empty(self) -> bool:
        method, _properties, _body = self.channel.basic_get(self.queue, auto_ack=True)
        return method is None

    def take_all(self) -> list[tuple[Any, Any, ChangeEvent]]:
        """Every message waiting now, as (method, properties, event)."""
        taken: list[tuple[Any, Any, ChangeEvent]] = []
        while True:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return taken
            event = decode_down(body)
            assert isinstance(event, ChangeEvent)
            taken.append((method, properties, event))


@pytest.fixture
def tap(feed_url: str) -> Iterator[Callable[..., Tap]]:
    with blocking_channel(feed_url) as channel:
        yield lambda *keys: Tap(channel, *keys)


def product(key: str, price: str = "10.00") -> Product:
    return Product(key=key, name=f"Producto {key}", price=Decimal(price), tax_rate=Decimal(21))


def write_changes(engine: Engine, products: int) -> int:
    """Products, stock of two locations, a payment method, an update and a delete."""
    with engine.begin() as connection:
        catalog.upsert_many(connection, [product(f"{n:06d}") for n in range(products)])
        for location in ("L1", "L2"):
            levels = [
                StockLevel(key=f"{location}/{n:06d}", product=f"{n:06d}", quantity=Decimal(n))
                for n in range(products // 2)
            ]
            catalog.upsert_many(connection, levels, scope=f"loc.{location}")
        methods = [PaymentMethod(key="PV1/efectivo", name="Efectivo", kind="cash")]
        catalog.upsert_many(connection, methods, scope="pos.PV1")
    with engine.begin() as connection:
        catalog.upsert(connection, product("000001", "99.00"))
        catalog.delete(connection, "productos", "000002")
        return int(
            connection.execute(sa.select(sa.func.count()).select_from(change_log)).scalar_one()
        )


def unpublished(engine: Engine) -> int:
    with engine.connect() as connection:
        query = sa.select(sa.func.count()).where(change_log.c.published_at.is_(None))
        return int(connection.execute(query.select_from(change_log)).scalar_one())


def logged_changes(engine: Engine) -> dict[tuple[str, int], bytes]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(change_log.c.stream, change_log.c.seq, change_log.c.body)
        )
        return {(stream, seq): body for stream, seq, body in rows}


def seqs_by_stream(messages: list[tuple[Any, Any, ChangeEvent]]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for _method, _properties, event in messages:
        for change in event.changes:
            seqs.setdefault(change.stream, []).append(change.seq)
    return seqs


# -- publishing ----------------------------------------------------------------------------


def test_changes_go_to_their_routing_keys_in_stream_order_and_are_marked_published(
    engine: Engine, feed_settings: Settings, tap: Callable[..., Tap]
) -> None:
    everything = tap("chg.#")
    total = write_changes(engine, 40)

    stats = run_feed_relay(engine, feed_settings, until_idle=0.3)

    messages = everything.drain(total)
    assert everything.empty()
    assert stats.confirmed == stats.published == total
    assert unpublished(engine) == 0
    logged = logged_changes(engine)
    for method, properties, event in messages:
        streams = {change.stream for change in event.changes}
        assert len(streams) == 1
        topic, scope = streams.pop().split(":", 1)
        assert method.routing_key == f"chg.{topic}.{scope}"
        assert properties.delivery_mode == 2
        assert properties.content_type == "application/msgpack"
        for change in event.changes:
            assert catalog_change(logged[change.stream, change.seq]) == change
    seqs = seqs_by_stream(messages)
    assert seqs == {
        "productos:all": list(range(1, 43)),
        "stock:loc.L1": list(range(1, 21)),
        "stock:loc.L2": list(range(1, 21)),
        "formas-de-pago:pos.PV1": [1],
    }


def test_a_terminal_bound_to_its_scopes_gets_only_those_streams(
    engine: Engine, feed_settings: Settings, tap: Callable[..., Tap]
) -> None:
    # what reaches the till: its queue's bindings and those of the two streams it reads
    shared = [topology.change_routing_key("*", scope) for scope in ("all", "loc.L2")]
    till = tap(*topology.change_bindings("T9", "L2", "PV7", "retail"), *shared)
    write_changes(engine, 10)

    run_feed_relay(engine, feed_settings, until_idle=0.3)

    assert set(seqs_by_stream(till.drain(10 + 2 + 5))) == {"productos:all", "stock:loc.L2"}
    assert till.empty()


def test_changes_nobody_is_bound_to_are_still_confirmed_and_marked(
    engine: Engine, feed_settings: Settings
) -> None:
    with engine.begin() as connection:
        catalog.upsert(connection, product("000001"), scope=f"term.T{uuid.uuid4().hex[:8]}")

    stats = run_feed_relay(engine, feed_settings, until_idle=0.3)

    assert (stats.confirmed, unpublished(engine)) == (1, 0)


def test_a_change_written_while_the_relay_runs_is_published_without_a_restart(
    engine: Engine, feed_settings: Settings, tap: Callable[..., Tap]
) -> None:
    listener = tap("chg.productos.all")
    with running_feed(engine, feed_settings):
        with engine.begin() as connection:
            catalog.upsert(connection, product("000001"))
        first = listener.drain(1)
        with engine.begin() as connection:
            catalog.upsert(connection, product("000001", "11.00"))
        second = listener.drain(1)

    assert [seqs_by_stream(first), seqs_by_stream(second)] == [
        {"productos:all": [1]},
        {"productos:all": [2]},
    ]


# -- stream heads --------------------------------------------------------------------------


def test_heads_are_read_only_for_streams_whose_changes_are_all_published(
    engine: Engine, feed_settings: Settings
) -> None:
    write_changes(engine, 10)
    with engine.connect() as connection:
        assert published_heads(connection) == {}  # nothing went out yet

    run_feed_relay(engine, feed_settings, until_idle=0.3)
    with engine.begin() as connection:
        catalog.upsert(connection, product("000001", "12.00"))  # not published yet
        after = published_heads(connection)

    assert after == {"stock:loc.L1": 5, "stock:loc.L2": 5, "formas-de-pago:pos.PV1": 1}


def test_the_relay_publishes_each_scopes_heads_after_the_changes_they_count(
    engine: Engine, feed_settings: Settings, tap: Callable[..., Tap]
) -> None:
    everything = tap("chg.#")
    often = feed_settings.with_overrides(head_interval_s=0.2)
    expected = {
        "chg.configuracion.all": {"productos:all": 12},
        "chg.stock.loc.L1": {"stock:loc.L1": 5},
        "chg.stock.loc.L2": {"stock:loc.L2": 5},
        "chg.formas-de-pago.pos.PV1": {"formas-de-pago:pos.PV1": 1},
    }
    received: list[tuple[Any, Any, ChangeEvent]] = []

    def every_scopes_heads_came() -> bool:
        received.extend(everything.take_all())
        last = {m.routing_key: e.heads for m, _p, e in received if e.heads}
        return last == expected

    with running_feed(engine, often) as feed:
        write_changes(engine, 10)
        wait_for(every_scopes_heads_came, "the heads of every scope")
        feed.stop.set()

    assert feed.result is not None
    assert feed.result.heads >= len(expected)
    seen: dict[str, int] = {}
    for _method, properties, event in received:
        for change in event.changes:
            seen[change.stream] = max(change.seq, seen.get(change.stream, 0))
        for stream, head in event.heads.items():
            assert seen.get(stream, 0) >= head, f"{stream} head {head} before its changes"
        if event.heads:
            assert event.changes == []
            assert properties.expiration == "400"  # two intervals: an offline till's queue


# -- nothing skipped, nothing lost ---------------------------------------------------------


def test_a_restart_midway_publishes_the_rest_with_nothing_skipped(
    engine: Engine, feed_settings: Settings, tap: Callable[..., Tap]
) -> None:
    everything = tap("chg.#")
    total = write_changes(engine, 600)
    small_window = feed_settings.with_overrides(publish_window=20)
    stop = threading.Event()

    def stop_after_some(stats: FeedStats) -> None:
        if stats.confirmed >= 100:
            stop.set()

    first = run_feed_relay(engine, small_window, stop=stop, on_progress=stop_after_some)
    left = unpublished(engine)
    assert 0 < left < total, "the first run should have stopped midway"
    # a crash between the broker's confirm and the UPDATE: those rows simply go again
    with engine.begin() as connection:
        last_marked = connection.execute(
            sa.select(sa.func.max(change_log.c.id)).where(change_log.c.published_at.is_not(None))
        ).scalar_one()
        connection.execute(
            change_log.update().where(change_log.c.id > last_marked - 10).values(published_at=None)
        )

    second = run_feed_relay(engine, small_window, until_idle=0.3)

    assert unpublished(engine) == 0
    assert first.confirmed + second.confirmed >= total
    # Everything is confirmed, so everything is queued: take it all. How many go twice is
    # not fixed (the 10 unmarked above, plus what the first run had in flight when it
    # stopped), so waiting for a count would stop short of the last changes.
    messages = everything.take_all()
    received = seqs_by_stream(messages)
    heads = {
        stream: max(seq for s, seq in logged_changes(engine) if s == stream) for stream in received
    }
    for stream, seqs in received.items():
        assert set(seqs) == set(range(1, heads[stream] + 1)), stream
        assert len(ascending_runs(seqs)) <= 2, stream  # each run publishes in stream order
    assert everything.empty()


def test_a_change_committed_after_a_later_one_is_still_published(
    pg_url: str, feed_settings: Settings, tap: Callable[..., Tap]
) -> None:
    """PostgreSQL: ids are taken at insert, not at commit; the relay must not skip the early one."""
    engine = make_engine(pg_url)
    upgrade(engine, "server")
    listener = tap("chg.productos.all", "chg.clientes.all")
    try:
        slow = engine.connect()
        slow_transaction = slow.begin()
        catalog.upsert(slow, product("000001"))  # takes the lower id, commits last
        with running_feed(engine, feed_settings):
            with engine.begin() as connection:
                catalog.upsert(connection, Customer(key="C1", name="Ana"))
            assert seqs_by_stream(listener.drain(1)) == {"clientes:all": [1]}
            slow_transaction.commit()
            slow.close()
            assert seqs_by_stream(listener.drain(1)) == {"productos:all": [1]}
        assert unpublished(engine) == 0
    finally:
        engine.dispose()


def test_the_relay_reconnects_after_a_dropped_connection_and_loses_nothing(
    engine: Engine, feed_settings: Settings, tap: Callable[..., Tap]
) -> None:
    everything = tap("chg.#")
    proxy = CuttableProxy(feed_settings.broker_url)
    through_proxy = feed_settings.with_overrides(broker_url=proxy.url, publish_window=20)
    try:
        with running_feed(engine, through_proxy) as feed:
            with engine.begin() as connection:
                catalog.upsert_many(connection, [product(f"{n:06d}") for n in range(50)])
            wait_for(lambda: unpublished(engine) == 0, "the first changes to be published")
            proxy.cut()
            with engine.begin() as connection:
                catalog.upsert_many(connection, [product(f"{n:06d}", "2.00") for n in range(50)])
            wait_for(lambda: unpublished(engine) == 0, "the changes after the cut")
            feed.stop.set()
    finally:
        proxy.close()

    assert feed.result is not None
    assert feed.result.reconnects >= 1
    seqs = seqs_by_stream(everything.drain(100))["productos:all"]
    assert set(seqs) == set(range(1, 101))


# -- events (no I/O) -----------------------------------------------------------------------


def test_consecutive_changes_of_one_stream_travel_as_one_bounded_event() -> None:
    rows = [row(n, "productos:all", n) for n in range(1, MAX_EVENT_CHANGES + 3)]
    rows += [row(200, "stock:loc.L1", 1), row(201, "productos:all", MAX_EVENT_CHANGES + 3)]

    events = events_of(rows)

    assert [(e.stream, e.first_seq, e.last_seq) for e in events] == [
        ("productos:all", 1, MAX_EVENT_CHANGES),
        ("productos:all", MAX_EVENT_CHANGES + 1, MAX_EVENT_CHANGES + 2),
        ("stock:loc.L1", 1, 1),
        ("productos:all", MAX_EVENT_CHANGES + 3, MAX_EVENT_CHANGES + 3),
    ]
    assert events[2].routing_key == "chg.stock.loc.L1"
    decoded = decode_down(events[0].body)
    assert isinstance(decoded, ChangeEvent)
    assert [c.seq for c in decoded.changes] == list(range(1, MAX_EVENT_CHANGES + 1))


# -- helpers -------------------------------------------------------------------------------


def catalog_change(body: bytes) -> Change:
    return msgspec.msgpack.decode(body, type=Change)


def row(change_id: int, stream: str, seq: int) -> ChangeRow:
    topic, scope = stream.split(":", 1)
    record = product(f"k{seq}")
    change = Change(stream=stream, seq=seq, topic=topic, key=record.key, version=1, record=record)
    return ChangeRow(change_id, stream, seq, topic, scope, encode(change))


def ascending_runs(seqs: list[int]) -> list[list[int]]:
    """`seqs` split where a seq is not above the one before it."""
    runs: list[list[int]] = [[]]
    for seq in seqs:
        if runs[-1] and seq <= runs[-1][-1]:
            runs.append([])
        runs[-1].append(seq)
    return runs


@dataclass
class RunningFeed:
    """`run_feed_relay` in a thread until `stop` is set."""

    stop: threading.Event
    result: FeedStats | None = None
    error: BaseException | None = None


@contextmanager
def running_feed(engine: Engine, settings: Settings) -> Iterator[RunningFeed]:
    feed = RunningFeed(threading.Event())

    def run() -> None:
        try:
            feed.result = run_feed_relay(engine, settings, stop=feed.stop)
        except BaseException as exc:
            feed.error = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield feed
    finally:
        feed.stop.set()
        thread.join(WAIT_S)
    assert not thread.is_alive(), "the feed relay did not stop"
    if feed.error is not None:
        raise feed.error
