"""Helpers for the relay tests: realistic sales, a relay in a thread, a tap on the up exchange."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core import topology
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import outbox
from cajasync.processes.terminal import RelayStats, run_terminal
from outbox.record import Recorded, record
from schemas import CashPayment, Sale, SaleLine, SalePayment, SaleTotals, encode
from schemas.envelope import Receipt, ReceiptItem, ReplayRequest
from tests.waiting import WAIT_S


def sale(number: int) -> Sale:
    """A ticket of three lines at two tax rates, paid in cash and by card."""
    lines = [
        SaleLine(
            product="7790001000011",
            description="Yerba 1kg",
            quantity=Decimal(2),
            unit_price=Decimal("3150.00"),
            tax_rate=Decimal(21),
        ),
        SaleLine(
            product="7790001000028",
            description="Leche entera 1l",
            quantity=Decimal(3),
            unit_price=Decimal("1099.90"),
            discount=Decimal("100.00"),
            tax_rate=Decimal("10.5"),
        ),
        SaleLine(
            product="7790001000035",
            description="Pan lactal",
            quantity=Decimal("1.5"),
            unit_price=Decimal("2400.00"),
            tax_rate=Decimal("10.5"),
        ),
    ]
    totals = SaleTotals.of(lines)
    cash = Decimal("5000.00")
    return Sale(
        book="B-0001",
        number=number,
        date=dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC) + dt.timedelta(minutes=number),
        seller="V01",
        lines=lines,
        payments=[
            SalePayment(method="efectivo", amount=cash),
            SalePayment(method="debito", amount=totals.total - cash),
        ],
        totals=totals,
    )


def cash_payment() -> CashPayment:
    return CashPayment(
        kind="advance",
        payee_kind="employee",
        payee="E07",
        amount=Decimal("15000.00"),
        method="efectivo",
        date=dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC),
        note="adelanto de sueldo",
    )


def record_sales(engine: Engine, count: int, *, first: int = 1) -> list[Recorded]:
    """Record `count` sales in one POS transaction."""
    with engine.begin() as connection:
        return [record(connection, sale(number)) for number in range(first, first + count)]


def rows(engine: Engine) -> list[Any]:
    """Every outbox row, in seq order."""
    with engine.connect() as connection:
        return list(connection.execute(sa.select(outbox).order_by(outbox.c.seq)))


def states(engine: Engine) -> dict[int, str]:
    return {row.seq: row.state for row in rows(engine)}


class RunningRelay:
    """`run_terminal` in a thread: the latest stats, and the final ones once stopped."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.stop = threading.Event()
        self.latest = RelayStats()
        self.final: RelayStats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(engine, settings), daemon=True)

    def _run(self, engine: Engine, settings: Settings) -> None:
        try:
            self.final = run_terminal(engine, settings, stop=self.stop, on_progress=self._progress)
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        """For `wait_for(..., relay)`: fail at once with the relay's own error if it died."""
        if self.error is not None:
            raise AssertionError("the relay died") from self.error

    def _progress(self, stats: RelayStats) -> None:
        self.latest = stats

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> RelayStats:
        self.stop.set()
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), "the relay did not stop"
        if self.error is not None:
            raise self.error
        assert self.final is not None
        return self.final


@contextmanager
def running_relay(engine: Engine, settings: Settings) -> Iterator[RunningRelay]:
    relay = RunningRelay(engine, settings)
    relay.start()
    try:
        yield relay
    finally:
        if relay.final is None and relay.error is None:
            relay.finish()


class Tap:
    """A private queue bound to one terminal's ops on `cajasync.up`, read with basic_get."""

    def __init__(self, channel: Any, terminal: str, *, arguments: dict[str, Any] | None = None):
        self.channel = channel
        self.queue = f"test.tap.{terminal}.{uuid.uuid4().hex[:6]}"
        channel.exchange_declare(topology.UP_EXCHANGE, "topic", durable=True)
        channel.queue_declare(self.queue, exclusive=True, auto_delete=True, arguments=arguments)
        channel.queue_bind(self.queue, topology.UP_EXCHANGE, routing_key=f"op.{terminal}.#")

    def take(self, count: int, timeout: float = WAIT_S) -> list[tuple[Any, Any, bytes]]:
        """The next `count` messages as (method, properties, body), acked."""
        taken: list[tuple[Any, Any, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(taken) < count:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"tap got {len(taken)} of {count} messages")
                self.channel.connection.sleep(0.05)
                continue
            taken.append((method, properties, body))
        return taken

    def seqs(self, count: int) -> list[int]:
        return [properties.headers["seq"] for _m, properties, _b in self.take(count)]


def send_down(url: str, terminal: str, message: Receipt | ReplayRequest | bytes) -> None:
    """Publish what the server would to the terminal's queue (`t.<terminal>` on cajasync.down)."""
    body = message if isinstance(message, bytes) else encode(message)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.basic_publish(
            topology.DOWN_EXCHANGE,
            topology.terminal_routing_key(terminal),
            body,
            pika.BasicProperties(delivery_mode=2, content_type="application/msgpack"),
        )
    finally:
        connection.close()


def receipt(terminal: str, *items: ReceiptItem) -> Receipt:
    return Receipt(terminal=terminal, items=list(items))


def acked(engine: Engine, seq: int) -> ReceiptItem:
    """The server's ack of outbox row `seq`, naming its (op_id, version) as every item does."""
    row = rows(engine)[seq - 1]
    return ReceiptItem(op_id=uuid.UUID(row.op_id), version=row.version, seq=seq, status="acked")


def rejected(engine: Engine, seq: int, reason: str) -> ReceiptItem:
    row = rows(engine)[seq - 1]
    op_id = uuid.UUID(row.op_id)
    return ReceiptItem(op_id=op_id, version=row.version, seq=seq, status="rejected", reason=reason)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def private_vhost(broker_url: str, purpose: str) -> Iterator[str | None]:
    """A fresh vhost for guest, deleted afterwards; None when rabbitmqctl is not usable.

    A private vhost keeps these tests away from anything else using the same broker (a
    server ingest running on `cajasync.ops` would otherwise receipt our test rows).
    """
    name = f"cajasync-test-{purpose}-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl(
            "set_permissions",
            "-p",
            name,
            urlsplit(broker_url).username or "guest",
            ".*",
            ".*",
            ".*",
        )
    except (OSError, subprocess.SubprocessError):
        yield None
        return
    try:
        yield urlunsplit(urlsplit(broker_url)._replace(path="/" + quote(name, safe="")))
    finally:
        rabbitmqctl("delete_vhost", name)


def rabbitmqctl_missing(what: str) -> None:
    """Skip (fail under CI) a test that needs its own vhost when rabbitmqctl is unusable."""
    message = f"{what} needs a private vhost: rabbitmqctl is not usable here"
    if os.environ.get("CI") or shutil.which("rabbitmqctl"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def declare_server_topology(url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        topology.declare_server(connection.channel())
    finally:
        connection.close()


@contextmanager
def blocking_channel(url: str) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


class CuttableProxy:
    """A TCP proxy in front of the broker that can cut every connection, as a network drop does."""

    def __init__(self, broker_url: str) -> None:
        parts = urlsplit(broker_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.url = urlunsplit(
            parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{self.port}")
        )
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def cut(self) -> None:
        """Close every proxied connection (both ends); new connections are still accepted."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            if source in self._sockets:
                self._sockets.remove(source)
        source.close()  # the other pipe closes `sink`
