"""The terminal registry and a broker user per till, on the real RabbitMQ (each test in a
private vhost, the users it creates deleted after) and both server stores."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pika
import pika.exceptions
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.broker.management import Management
from cajasync.broker.ports import REASON_HEADER
from cajasync.broker.rabbitmq import blocking_channel
from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, outbox
from cajasync.errors import BrokerUnavailable, ConfigError
from cajasync.processes import fleet
from cajasync.processes.pull import pull
from cajasync.processes.server import claim_vhost, serve
from cajasync.processes.terminal import run_terminal
from cajasync.processes.terminal_init import init_terminal
from inbox.ingest import run_ingest, server_stats
from inbox.registry import registered
from outbox import catalog
from schemas.records import Product, StockLevel
from tests.integration.down_support import Loop, vhost_for
from tests.integration.relay_support import rabbitmqctl_missing, record_sales
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def vhost_url(broker_url: str) -> Iterator[str]:
    with vhost_for(broker_url, "registry") as url:
        if url is None:
            rabbitmqctl_missing("the registry tests")
        assert url is not None
        yield url


@pytest.fixture
def strict(settings: Settings, vhost_url: str) -> Settings:
    """The server's settings: private vhost, registered tills with their own users only."""
    return settings.with_overrides(
        broker_url=vhost_url, management_url="http://127.0.0.1:15672", allow_shared_user=False
    )


@pytest.fixture
def server(server_db_url: str) -> Iterator[Engine]:
    engine = make_engine(server_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def new_till(strict: Settings) -> Iterator[Callable[[], str]]:
    """Unique terminal ids; their broker users are deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"R{uuid.uuid4().hex[:8].upper()}")
        return made[-1]

    yield make
    management = Management(strict)
    for terminal in made:
        management.delete_user(terminal)


def add(server: Engine, strict: Settings, terminal: str, location: str = "L1") -> str:
    identity = TerminalIdentity(terminal, location, "PV1", "retail")
    url = fleet.add_terminal(server, strict, identity).broker_url
    assert url is not None
    return url


def as_till(strict: Settings, url: str) -> Settings:
    return strict.with_overrides(broker_url=url)


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def test_a_till_with_its_own_credentials_publishes_and_pulls(
    server: Engine, strict: Settings, new_till: Callable[[], str], tmp_path: Path
) -> None:
    terminal = new_till()
    till = as_till(strict, add(server, strict, terminal))
    with server.begin() as connection:
        catalog.upsert(
            connection,
            Product(key="P1", name="Yerba", price=Decimal("10.00"), tax_rate=Decimal(21)),
        )
        catalog.upsert(
            connection,
            StockLevel(key="L1/P1", product="P1", quantity=Decimal(5)),
            scope="loc.L1",
        )
    # the till says it is in L9: the registry's L1 is what it gets
    identity = TerminalIdentity(terminal, "L9", "PV1", "retail")
    engine = init_terminal(str(tmp_path / "till.db"), identity, till)
    try:
        record_sales(engine, 3)
        loop = Loop("server", lambda stop: serve(server, strict, stop=stop))
        try:
            pulled = pull(engine, till, ["productos", "stock"], timeout=60)
            assert pulled.records == 2
            relay = Loop("till", lambda stop: run_terminal(engine, till, stop=stop))
            try:
                wait_for(lambda: _acked(engine) == 3, "the till's sales acknowledged")
            finally:
                relay.finish()
        finally:
            loop.finish()
    finally:
        engine.dispose()
    held = {row["terminal"]: row for row in server_stats(server)["terminals"]}
    assert held[terminal]["contiguous_seq"] == 3


def test_its_credentials_cannot_publish_as_another_terminal(
    server: Engine, strict: Settings, new_till: Callable[[], str]
) -> None:
    mine, other = new_till(), new_till()
    url = add(server, strict, mine)
    add(server, strict, other)
    connection = connect(url)
    channel = connection.channel()
    channel.confirm_delivery()  # the publish waits for the broker's answer
    key = topology.op_routing_key(other, "ventas")
    properties = pika.BasicProperties(user_id=mine)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.basic_publish(topology.UP_EXCHANGE, key, b"x", properties)
    assert refused.value.reply_code == 403
    connection.close()


def test_its_credentials_cannot_read_another_tills_queue(
    server: Engine, strict: Settings, new_till: Callable[[], str]
) -> None:
    mine, other = new_till(), new_till()
    url = add(server, strict, mine)
    add(server, strict, other)
    connection = connect(url)
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.basic_consume(topology.terminal_queue(other), lambda *_: None)
    assert refused.value.reply_code == 403
    connection.close()


def test_a_revoked_till_is_refused_by_the_broker_and_the_registry(
    server: Engine, strict: Settings, new_till: Callable[[], str]
) -> None:
    terminal = new_till()
    url = add(server, strict, terminal)
    open_before = connect(url)
    fleet.revoke_terminal(server, strict, terminal)
    wait_for(lambda: not open_before.is_open or _closed(open_before), "its connection closed")
    with pytest.raises(BrokerUnavailable, match="refused the credentials"):
        connect_or_raise(url)
    registration = registered(server, terminal)
    assert registration is not None
    assert registration.revoked


def test_a_moved_till_reads_only_its_new_locations_stream(
    server: Engine, strict: Settings, new_till: Callable[[], str]
) -> None:
    terminal = new_till()
    url = add(server, strict, terminal, location="L1")
    assert _can_read(url, topology.scope_stream("loc.L1"))
    fleet.move_terminal(server, strict, terminal, location="L2")

    assert _can_read(url, topology.scope_stream("loc.L2"))
    assert not _can_read(url, topology.scope_stream("loc.L1"))
    assert _can_read(url, topology.scope_stream("all"))
    queue = topology.terminal_queue(terminal)
    bound = Management(strict).bound_keys(queue, topology.DOWN_EXCHANGE)
    assert not [key for key in bound if ".loc." in key]  # a location's changes come by stream


def _can_read(url: str, stream: str) -> bool:
    """Whether the till's broker user may consume `stream` (403 ACCESS_REFUSED otherwise)."""
    connection = connect(url)
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        try:
            channel.basic_consume(stream, lambda *_: None, arguments={"x-stream-offset": "next"})
        except pika.exceptions.ChannelClosedByBroker as refused:
            if refused.reply_code != 403:
                raise
            return False
        return True
    finally:
        if connection.is_open:
            connection.close()


def test_rotating_a_password_refuses_the_old_one(
    server: Engine, strict: Settings, new_till: Callable[[], str]
) -> None:
    terminal = new_till()
    old = add(server, strict, terminal)
    new = fleet.rotate_terminal(server, strict, terminal).broker_url
    assert new is not None
    assert new != old
    with pytest.raises(BrokerUnavailable, match="refused the credentials"):
        connect_or_raise(old)
    connect_or_raise(new)


def test_a_second_store_on_the_same_vhost_is_refused(
    server: Engine, strict: Settings, tmp_path: Path
) -> None:
    first = claim_vhost(server, strict)
    assert claim_vhost(server, strict) == first  # any number of processes of one store
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        upgrade(other, "server")
        with pytest.raises(ConfigError, match=f"already served by store {first}"):
            claim_vhost(other, strict)
    finally:
        other.dispose()


def test_init_again_elsewhere_leaves_no_stale_binding(
    strict: Settings, tmp_path: Path, new_till: Callable[[], str]
) -> None:
    terminal = new_till()
    shared = strict.with_overrides(allow_shared_user=True)
    db = str(tmp_path / "till.db")
    init_terminal(db, TerminalIdentity(terminal, "L1", "PV1", "restaurant"), shared).dispose()
    init_terminal(db, TerminalIdentity(terminal, "L2", "PV1", "retail"), shared).dispose()
    bound = Management(strict).bound_keys(topology.terminal_queue(terminal), "cajasync.down")
    assert not [key for key in bound if "loc.L1" in key or key.startswith("chg.mesas.")]
    assert not [key for key in bound if key.endswith(".all") or ".loc." in key]  # by stream
    assert set(topology.change_bindings(terminal, "L2", "PV1", "retail")) <= set(bound)


def connect_or_raise(url: str) -> None:
    with blocking_channel(url, doing="connecting"):
        pass


def _closed(connection: pika.BlockingConnection) -> bool:
    try:
        connection.process_data_events(0)
    except pika.exceptions.AMQPError:
        return True
    return not connection.is_open


def _acked(engine: Engine) -> int:
    with engine.connect() as connection:
        query = sa.select(sa.func.count()).where(outbox.c.state == ACKED).select_from(outbox)
        return int(connection.execute(query).scalar_one())


def test_a_strict_server_dead_letters_a_registered_tills_operation_sent_as_guest(
    server: Engine, strict: Settings, new_till: Callable[[], str], tmp_path: Path
) -> None:
    terminal = new_till()
    add(server, strict, terminal)
    guest = strict.with_overrides(allow_shared_user=True)  # the till itself: shared user
    engine = init_terminal(
        str(tmp_path / "till.db"), TerminalIdentity(terminal, "L1", "PV1", "retail"), guest
    )
    try:
        record_sales(engine, 1)
        run_terminal(engine, guest, until_idle=0.5)
    finally:
        engine.dispose()
    stats = run_ingest(server, strict, until_idle=1.0)
    assert (stats.applied, stats.dead_lettered) == (0, 1)
    with blocking_channel(strict.broker_url) as channel:
        _method, properties, _body = channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
    assert "shared broker user" in properties.headers[REASON_HEADER]
