"""The terminal relay and the feed relay, through their public entry points, on the stub
broker: operations up and receipts back, returns, change events down, nacks."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from cajasync.broker.stub import StubBroker
from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import outbox as outbox_rows
from cajasync.processes.terminal import run_terminal
from cajasync.processes.terminal_init import init_terminal
from inbox.ingest import Ingest
from inbox.server_store import MemoryServerStore
from outbox import catalog
from outbox.feed_relay import FeedStats, run_feed_relay
from outbox.record import record
from schemas import CashPayment
from schemas.codec import decode_down
from schemas.feed import ChangeEvent
from schemas.records import Product

IDLE_S = 0.3
SETTINGS = Settings(retry_initial_s=0.01, retry_max_s=0.05, head_interval_s=0)
IDENTITY = TerminalIdentity("T1", "L1", "PV1", "retail")


@pytest.fixture
def terminal_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = init_terminal(
        f"sqlite:///{tmp_path / 'terminal.db'}", IDENTITY, SETTINGS, declare=False
    )
    yield engine
    engine.dispose()


@pytest.fixture
def server_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    upgrade(engine, "server")
    yield engine
    engine.dispose()


def record_payments(engine: sa.Engine, count: int) -> None:
    payment = CashPayment(
        kind="advance",
        payee_kind="employee",
        payee="E07",
        amount=Decimal("15.00"),
        method="efectivo",
        date=dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC),
    )
    with engine.begin() as connection:
        for _ in range(count):
            record(connection, payment)


def pending_errors(engine: sa.Engine) -> list[str | None]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(outbox_rows.c.last_error).where(outbox_rows.c.sent_at.is_(None))
        )
        return [row[0] for row in rows]


def test_operations_go_up_confirmed_and_their_receipts_come_back(
    terminal_engine: sa.Engine,
) -> None:
    broker = StubBroker()
    topology.declare_server(broker.channel())
    record_payments(terminal_engine, 3)
    up = run_terminal(terminal_engine, SETTINGS, until_idle=IDLE_S, connect=broker.terminal_link)
    assert (up.published, up.confirmed) == (3, 3)
    assert [m.headers["seq"] for m in broker.messages(topology.OPS_QUEUE)] == [1, 2, 3]
    applied = Ingest(MemoryServerStore(), SETTINGS, broker=broker, until_idle=IDLE_S).run()
    assert applied.applied == 3
    back = run_terminal(terminal_engine, SETTINGS, until_idle=IDLE_S, connect=broker.terminal_link)
    assert (back.receipts, back.acked, back.published) == (1, 3, 0)
    assert broker.messages(topology.terminal_queue("T1")) == []


def test_operations_no_queue_takes_are_returned_and_stay_pending_with_why(
    terminal_engine: sa.Engine,
) -> None:
    broker = StubBroker()  # the server was never initialised: nothing bound to op.#
    record_payments(terminal_engine, 2)
    stats = run_terminal(terminal_engine, SETTINGS, until_idle=IDLE_S, connect=broker.terminal_link)
    assert stats.confirmed == 0
    assert stats.returned >= 2  # held, then tried again after their back-off
    errors = pending_errors(terminal_engine)
    assert len(errors) == 2
    assert all("unroutable" in (error or "") for error in errors)


def put_products(engine: sa.Engine, count: int) -> None:
    with engine.begin() as connection:
        for n in range(count):
            product = Product(
                key=f"P{n:06d}",
                name=f"Producto {n}",
                barcodes=[],
                price=Decimal("10.50"),
                tax_rate=Decimal(21),
            )
            catalog.upsert(connection, product)


def test_catalog_changes_go_down_to_the_stream_of_their_scope_once_confirmed(
    server_engine: sa.Engine,
) -> None:
    broker = StubBroker()
    queue = topology.declare_terminal(broker.channel(), "T1", "L1", "PV1", "retail")
    put_products(server_engine, 3)
    stats = run_feed_relay(server_engine, SETTINGS, until_idle=IDLE_S, connect=broker.feed_link)
    assert (stats.confirmed, stats.events) == (3, 1)
    assert broker.messages(queue) == []  # the chain's changes are not copied per till
    [event] = [decode_down(m.body) for m in broker.messages(topology.scope_stream("all"))]
    assert isinstance(event, ChangeEvent)
    assert [change.key for change in event.changes] == ["P000000", "P000001", "P000002"]


def test_changes_a_queue_refuses_are_nacked_and_published_again_once_it_takes_them(
    server_engine: sa.Engine,
) -> None:
    broker = StubBroker()
    topology.declare_terminal(broker.channel(), "T1", "L1", "PV1", "retail")
    queue = topology.scope_stream("all")
    broker.refusing.add(queue)
    put_products(server_engine, 1)
    stop = threading.Event()

    def stop_once_nacked(stats: FeedStats) -> None:
        if stats.nacked:
            stop.set()

    refused = run_feed_relay(
        server_engine,
        SETTINGS,
        stop=stop,
        on_progress=stop_once_nacked,
        connect=broker.feed_link,
    )
    assert (refused.confirmed, refused.nacked) == (0, 1)
    broker.refusing.clear()
    for _ in range(len(broker.messages(queue))):
        broker.get(queue)  # what the refusing stream took anyway
    again = run_feed_relay(server_engine, SETTINGS, until_idle=IDLE_S, connect=broker.feed_link)
    assert again.confirmed == 1
    [event] = [decode_down(m.body) for m in broker.messages(queue)]
    assert isinstance(event, ChangeEvent)
