"""The down feed through the terminal relay, against the real RabbitMQ.

The server side is played by the test: it publishes change events to `cajasync.down`
and answers the terminal's requests, which it reads from a queue bound to `req.<T>.#`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pika
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from cajasync.broker.links import PUBLISHED_AT
from cajasync.core import topology
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.errors import ConfigError
from cajasync.processes.pull import PullResult, pull
from cajasync.processes.terminal import run_terminal
from cajasync.processes.terminal_init import init_terminal
from cli.main import cli
from inbox.replica_api import Replica
from schemas.codec import decode_request, encode
from schemas.feed import (
    CatchUpRequest,
    Change,
    ChangeEvent,
    ImageData,
    ImageRequest,
    ImagesDone,
    SnapshotDone,
    SnapshotPage,
    SnapshotRequest,
)
from schemas.records import Product
from tests.integration.relay_support import (
    blocking_channel,
    declare_server_topology,
    private_vhost,
    rabbitmqctl_missing,
    record_sales,
    running_relay,
    states,
)
from tests.waiting import WAIT_S, wait_for

pytestmark = pytest.mark.rabbitmq

PRODUCTS = "productos:all"


@dataclasses.dataclass
class Terminal:
    id: str
    engine: Engine
    settings: Settings


@pytest.fixture(scope="module")
def feed_broker_url(broker_url: str) -> Iterator[str]:
    """A private vhost with the server topology: no server of anybody else answers here."""
    with private_vhost(broker_url, "feed") as url:
        if url is None:
            rabbitmqctl_missing("the feed tests")
            return
        declare_server_topology(url)
        yield url


@pytest.fixture
def terminal(
    tmp_path: Path, settings: Settings, new_terminal_id: Callable[[], str], feed_broker_url: str
) -> Iterator[Terminal]:
    terminal_id = new_terminal_id()
    own = settings.with_overrides(broker_url=feed_broker_url)
    identity = TerminalIdentity(terminal_id, "L1", "PV1", "retail")
    engine = init_terminal(str(tmp_path / f"{terminal_id}.db"), identity, own)
    yield Terminal(terminal_id, engine, own)
    engine.dispose()


@pytest.fixture
def channel(feed_broker_url: str) -> Iterator[Any]:
    with blocking_channel(feed_broker_url) as channel:
        yield channel


class RequestTap:
    """A private queue bound to one terminal's requests on `cajasync.up`."""

    def __init__(self, channel: Any, terminal: str) -> None:
        self.channel = channel
        self.queue = f"test.requests.{terminal}.{uuid.uuid4().hex[:6]}"
        channel.queue_declare(self.queue, exclusive=True, auto_delete=True)
        channel.queue_bind(self.queue, topology.UP_EXCHANGE, routing_key=f"req.{terminal}.#")

    def take(self) -> tuple[Any, Any, Any]:
        """The next request as (method, properties, decoded request); the till's status
        reports (answered by nothing) are passed over."""
        found: list[tuple[Any, Any, Any]] = []

        def arrived() -> bool:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is not None and not method.routing_key.endswith(".status"):
                found.append((method, properties, decode_request(body)))
            return bool(found)

        wait_for(arrived, "a request from the terminal")
        return found[0]

    def empty(self) -> bool:
        """No request waiting (status reports are taken and passed over)."""
        while True:
            method, _properties, _body = self.channel.basic_get(self.queue, auto_ack=False)
            if method is None:
                return True
            if not method.routing_key.endswith(".status"):
                self.channel.basic_nack(method.delivery_tag, requeue=True)
                return False
            self.channel.basic_ack(method.delivery_tag)


def product(key: str, version: int = 1, image: str | None = None) -> Product:
    return Product(
        key=key,
        version=version,
        name=f"Producto {key}",
        price=Decimal("100.00"),
        tax_rate=Decimal(21),
        image=image,
    )


def change(seq: int, record: Product) -> Change:
    return Change(
        stream=PRODUCTS,
        seq=seq,
        topic="productos",
        key=record.key,
        version=record.version,
        record=record,
    )


def publish(channel: Any, routing_key: str, message: Any) -> None:
    """As the feed relay publishes: stamped, so a till created later skips it in the
    chain's stream (earlier tests of this module publish there too)."""
    headers = {PUBLISHED_AT: int(time.time() * 1000)}
    channel.basic_publish(
        topology.DOWN_EXCHANGE,
        routing_key,
        encode(message),
        pika.BasicProperties(delivery_mode=2, content_type="application/msgpack", headers=headers),
    )


def test_a_change_event_on_the_products_feed_lands_in_a_running_terminals_replica(
    terminal: Terminal, channel: Any
) -> None:
    yerba = product("7790001000011", 4)

    with running_relay(terminal.engine, terminal.settings) as relay:
        publish(channel, "chg.productos.all", ChangeEvent(changes=[change(1, yerba)]))
        wait_for(
            lambda: Replica(terminal.engine).get(Product, yerba.key) is not None,
            "the product in the replica",
            relay,
        )
        stats = relay.finish()

    assert Replica(terminal.engine).get(Product, yerba.key) == yerba
    assert stats.down == 1
    assert stats.requests == 0


def test_a_gap_sends_one_catch_up_request_and_outbox_rows_still_become_sent(
    terminal: Terminal, channel: Any
) -> None:
    tap = RequestTap(channel, terminal.id)
    record_sales(terminal.engine, 5)

    with running_relay(terminal.engine, terminal.settings) as relay:
        wait_for(lambda: set(states(terminal.engine).values()) == {"sent"}, "first sales", relay)
        publish(channel, "chg.productos.all", ChangeEvent(changes=[change(7, product("A"))]))
        publish(channel, "chg.productos.all", ChangeEvent(changes=[change(8, product("B"))]))
        record_sales(terminal.engine, 5, first=6)
        method, properties, request = tap.take()
        wait_for(lambda: set(states(terminal.engine).values()) == {"sent"}, "every sale", relay)
        stats = relay.finish()

    assert method.routing_key == f"req.{terminal.id}.catch-up"
    assert properties.user_id == "guest"
    assert request == CatchUpRequest(
        terminal=terminal.id,
        location="L1",
        pos="PV1",
        terminal_kind="retail",
        stream=PRODUCTS,
        from_seq=1,
    )
    assert tap.empty()  # once per gap
    assert (stats.requests, stats.confirmed, stats.nacked, stats.returned) == (1, 10, 0, 0)
    assert len(states(terminal.engine)) == 10


def test_a_forged_change_event_with_a_nan_price_is_refused_and_the_relay_keeps_going(
    terminal: Terminal, channel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tap = RequestTap(channel, terminal.id)
    forged = msgspec.structs.replace(
        change(2, product("B")), record=msgspec.structs.replace(product("B"), price=Decimal("NaN"))
    )
    record_sales(terminal.engine, 3)

    with (
        caplog.at_level(logging.ERROR, logger="inbox.replica"),
        running_relay(terminal.engine, terminal.settings) as relay,
    ):
        publish(channel, "chg.productos.all", ChangeEvent(changes=[change(1, product("A"))]))
        publish(channel, "chg.productos.all", ChangeEvent(changes=[forged]))
        publish(channel, "chg.productos.all", ChangeEvent(changes=[change(3, product("C"))]))
        wait_for(lambda: Replica(terminal.engine).get(Product, "C") is not None, "C", relay)
        record_sales(terminal.engine, 3, first=4)
        wait_for(lambda: set(states(terminal.engine).values()) == {"sent"}, "every sale", relay)
        stats = relay.finish()

    replica = Replica(terminal.engine)
    assert [p.key for p in replica.query(Product)] == ["A", "C"]
    assert "refusing productos 'B' v1 (productos:all seq 2)" in caplog.text
    assert "price: NaN is not a finite number" in caplog.text
    assert (stats.down, stats.requests, stats.confirmed) == (3, 0, 6)
    assert tap.empty()


def test_stream_heads_alone_do_not_keep_an_idle_terminal_running(
    terminal: Terminal, channel: Any
) -> None:
    ended = threading.Event()

    def run() -> None:
        run_terminal(terminal.engine, terminal.settings, until_idle=1.0)
        ended.set()

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + WAIT_S
    while not ended.is_set() and time.monotonic() < deadline:
        publish(channel, "chg.productos.all", ChangeEvent(changes=[], heads={PRODUCTS: 0}))
        channel.connection.sleep(0.2)

    assert ended.is_set(), "run_terminal(until_idle=1.0) never ended while heads kept coming"


def answer_snapshot(channel: Any, terminal: str, request: SnapshotRequest, pages: int) -> None:
    """What the server sends for a snapshot: `pages` pages of 100 products, then done."""
    reply = topology.terminal_routing_key(terminal)
    for page in range(pages):
        changes = [
            change(
                page * 100 + i + 1,
                product(f"P{page * 100 + i:05d}", image=IMAGE_SHA if i == 0 else None),
            )
            for i in range(100)
        ]
        publish(
            channel,
            reply,
            SnapshotPage(request_id=request.request_id, stream=PRODUCTS, changes=changes),
        )
    done = SnapshotDone(
        request_id=request.request_id,
        high_water={PRODUCTS: pages * 100},
        records=pages * 100,
        images=[IMAGE_SHA] if request.images else [],
    )
    publish(channel, reply, done)


IMAGE = b"\x89PNG yerba"
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()


class Puller:
    """`pull` in a thread, so the test can play the server meanwhile."""

    def __init__(self, terminal: Terminal, **options: Any) -> None:
        self.result: PullResult | None = None
        self.error: BaseException | None = None
        self.progress: list[tuple[int, int, int, int]] = []
        self._thread = threading.Thread(target=self._run, args=(terminal, options), daemon=True)
        self._thread.start()

    def _run(self, terminal: Terminal, options: dict[str, Any]) -> None:
        try:
            self.result = pull(
                terminal.engine,
                terminal.settings,
                ["products"],
                timeout=WAIT_S,
                on_progress=lambda *counts: self.progress.append(counts),
                **options,
            )
        except BaseException as exc:
            self.error = exc

    def join(self) -> PullResult:
        self._thread.join(WAIT_S + 10)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def test_a_pull_with_images_applies_the_snapshot_and_fetches_the_missing_images(
    terminal: Terminal, channel: Any
) -> None:
    tap = RequestTap(channel, terminal.id)
    puller = Puller(terminal, images=True)

    method, _properties, request = tap.take()
    assert method.routing_key == f"req.{terminal.id}.snapshot"
    assert isinstance(request, SnapshotRequest)
    answer_snapshot(channel, terminal.id, request, pages=3)
    _method, _properties, wanted = tap.take()
    assert wanted == ImageRequest(
        terminal=terminal.id, request_id=request.request_id, hashes=[IMAGE_SHA]
    )
    reply = topology.terminal_routing_key(terminal.id)
    publish(channel, reply, ImageData(request_id=request.request_id, sha256=IMAGE_SHA, data=IMAGE))
    publish(channel, reply, ImagesDone(request_id=request.request_id, sent=1))
    result = puller.join()

    assert (request.topics, request.since, request.images) == (["productos"], {}, True)
    assert (result.status, result.records, result.images, result.full) == ("done", 300, 1, False)
    assert result.bytes > 300 * 30
    assert puller.progress[-1] == (result.records, result.bytes, 1, result.image_bytes)
    replica = Replica(terminal.engine)
    assert replica.count("productos") == {"productos": 300}
    assert replica.image(IMAGE_SHA) == IMAGE


def test_a_second_pull_is_a_refresh_from_the_terminals_position(
    terminal: Terminal, channel: Any
) -> None:
    tap = RequestTap(channel, terminal.id)
    first = Puller(terminal)
    _m, _p, request = tap.take()
    answer_snapshot(channel, terminal.id, request, pages=1)
    first.join()

    second = Puller(terminal)
    _m, _p, refresh = tap.take()
    publish(
        channel,
        topology.terminal_routing_key(terminal.id),
        SnapshotDone(request_id=refresh.request_id, high_water={PRODUCTS: 100}, records=0),
    )
    result = second.join()

    assert refresh.since == {PRODUCTS: 100}
    assert (result.status, result.records) == ("done", 0)


def test_a_full_pull_ignores_the_terminals_positions(terminal: Terminal, channel: Any) -> None:
    tap = RequestTap(channel, terminal.id)
    first = Puller(terminal)
    _m, _p, request = tap.take()
    answer_snapshot(channel, terminal.id, request, pages=1)
    first.join()

    second = Puller(terminal, full=True)
    _m, _p, again = tap.take()
    answer_snapshot(channel, terminal.id, again, pages=1)
    result = second.join()

    assert again.since == {}
    assert (result.full, result.records) == (True, 100)


def test_cajasync_pull_prints_what_it_brought(
    terminal: Terminal, channel: Any, tmp_path: Path
) -> None:
    tap = RequestTap(channel, terminal.id)
    db = str(tmp_path / f"{terminal.id}.db")
    runner = CliRunner(env={"CAJASYNC_BROKER_URL": terminal.settings.broker_url})
    outcome: list[Any] = []
    command = threading.Thread(
        target=lambda: outcome.append(
            runner.invoke(cli, ["pull", "--db", db, "products", "--timeout", "30", "--json"])
        ),
        daemon=True,
    )
    command.start()
    _m, _p, request = tap.take()
    answer_snapshot(channel, terminal.id, request, pages=2)
    command.join(WAIT_S)

    assert outcome, "the command did not finish"
    assert outcome[0].exit_code == 0, outcome[0].output
    printed = json.loads(outcome[0].output)
    assert (printed["status"], printed["records"], printed["topics"]) == (
        "done",
        200,
        ["productos"],
    )


def test_cajasync_pull_needs_topics_or_all(terminal: Terminal, tmp_path: Path) -> None:
    db = str(tmp_path / f"{terminal.id}.db")

    result = CliRunner().invoke(cli, ["pull", "--db", db])

    assert result.exit_code == 2
    assert "give either --all or one or more TOPICS" in result.output


def test_a_shop_cannot_pull_tables(terminal: Terminal) -> None:
    with pytest.raises(ConfigError, match="does not receive mesas"):
        pull(terminal.engine, terminal.settings, ["tables"])
