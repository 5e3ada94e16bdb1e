"""Helpers for the ingest tests: raw publishing, a server in a thread, reading what it sent.

Everything goes through the real broker: messages are published to `cajasync.up` the way a
relay (or a forger) would, and the test reads `cajasync.dead` and the terminals' queues.
"""

from __future__ import annotations

import datetime as dt
import secrets
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import sqlalchemy as sa

from cajasync.broker.ports import REASON_HEADER
from cajasync.core import topology
from cajasync.core.server_tables import operations, received
from cajasync.core.settings import Settings
from inbox.ingest import IngestStats, run_ingest
from schemas import (
    OpEnvelope,
    Operation,
    Receipt,
    ReceiptItem,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    decode_down,
    encode,
    topic_of,
)
from tests.integration.relay_support import rabbitmqctl, rabbitmqctl_missing

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
WAIT_S = 20.0


def sale(number: int = 1) -> Sale:
    line = SaleLine(product="P1", quantity=Decimal(2), unit_price=Decimal(5), tax_rate=Decimal(21))
    totals = SaleTotals.of([line])
    return Sale(
        book="A",
        number=number,
        date=NOW,
        seller="S1",
        lines=[line],
        payments=[SalePayment(method="cash", amount=totals.total)],
        totals=totals,
    )


def envelope(
    terminal: str,
    seq: int,
    op: Operation | None = None,
    *,
    op_id: uuid.UUID | None = None,
    version: int = 1,
) -> OpEnvelope:
    return OpEnvelope(
        terminal=terminal,
        seq=seq,
        op_id=op_id or uuid.uuid4(),
        version=version,
        recorded_at=NOW,
        op=op or sale(seq),
    )


def publish(
    channel: Any,
    body: bytes,
    routing_key: str,
    *,
    user_id: str | None = "guest",
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish anything to `cajasync.up`, persistent msgpack, with the properties given."""
    channel.basic_publish(
        topology.UP_EXCHANGE,
        routing_key,
        body,
        pika.BasicProperties(
            delivery_mode=2,
            content_type="application/msgpack",
            message_id=message_id,
            user_id=user_id,
            headers=headers or {},
        ),
    )


def publish_op(channel: Any, env: OpEnvelope, *, user_id: str = "guest", **extra: Any) -> None:
    """Publish an operation as its terminal's relay does."""
    topic = topic_of(env.op)
    headers = {"terminal": env.terminal, "seq": env.seq, "topic": topic, **extra}
    publish(
        channel,
        encode(env),
        topology.op_routing_key(env.terminal, topic),
        user_id=user_id,
        message_id=f"{env.op_id}/{env.version}",
        headers=headers,
    )


def take_dead(channel: Any) -> list[tuple[bytes, dict[str, Any]]]:
    """Every message on `cajasync.dead` now, with its headers (taken off the queue)."""
    found: list[tuple[bytes, dict[str, Any]]] = []
    while True:
        method, properties, body = channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
        if method is None:
            return found
        found.append((body, dict(properties.headers or {})))


class DeadQueue:
    """What arrives on `cajasync.dead`, accumulated as the test reads it."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.seen: list[tuple[bytes, dict[str, Any]]] = []

    def count(self) -> int:
        """Take what arrived since the last call; how many arrived in all."""
        self.seen += take_dead(self.channel)
        return len(self.seen)


def take_receipt_items(channel: Any, terminal: str) -> list[ReceiptItem]:
    """Every receipt item on the terminal's queue now (taken off the queue)."""
    items: list[ReceiptItem] = []
    while True:
        method, _, body = channel.basic_get(topology.terminal_queue(terminal), auto_ack=True)
        if method is None:
            return items
        message = decode_down(body)
        if isinstance(message, Receipt):
            items.extend(message.items)


def reason_of(headers: dict[str, Any]) -> str:
    reason = headers.get(REASON_HEADER)
    return reason.decode() if isinstance(reason, bytes) else str(reason or "")


def held_ops(engine: sa.Engine, terminal: str) -> dict[str, tuple[int, int, str]]:
    """op_id -> (version, seq, payload) of every operation the server holds for a terminal."""
    o = operations.c
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(o.op_id, o.version, o.seq, o.payload).where(o.terminal == terminal)
        ).all()
    return {op_id: (version, seq, payload) for op_id, version, seq, payload in rows}


def tracking_rows(engine: sa.Engine, terminal: str) -> list[tuple[int, str, int, str]]:
    """(seq, op_id, version, status) of every tracking row of a terminal, by seq."""
    r = received.c
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(r.seq, r.op_id, r.version, r.status)
            .where(r.terminal == terminal)
            .order_by(r.seq)
        ).all()
    return [(seq, op_id, version, status) for seq, op_id, version, status in rows]


class RunningServer:
    """Server ingest on a real store, in a thread until stopped."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.stop = threading.Event()
        self.latest = IngestStats()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(engine, settings), daemon=True)

    def _run(self, engine: sa.Engine, settings: Settings) -> None:
        try:
            run_ingest(engine, settings, stop=self.stop, on_progress=self._progress)
        except BaseException as exc:
            self.error = exc

    def _progress(self, stats: IngestStats) -> None:
        self.latest = stats

    def running(self) -> bool:
        """True while ingest runs; raises the error that stopped it, if one did."""
        if self.error is not None:
            raise AssertionError("server ingest stopped") from self.error
        return self._thread.is_alive()

    def check(self) -> None:
        """For `wait_for(..., server)`: fail at once if ingest stopped."""
        assert self.running(), "server ingest stopped"

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), "server ingest did not stop"

    def finish(self) -> IngestStats:
        self.stop.set()
        self.join()
        if self.error is not None:
            raise self.error
        return self.latest


@contextmanager
def running_server(engine: sa.Engine, settings: Settings) -> Iterator[RunningServer]:
    server = RunningServer(engine, settings)
    server.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.join()


@contextmanager
def broker_user(broker_url: str, name: str) -> Iterator[str]:
    """A broker user of its own (as a terminal gets in production) on the URL's vhost.

    Yields the URL to connect as that user; the user is deleted afterwards. Skips the test
    (fails it under CI) when rabbitmqctl is not usable here.
    """
    parts = urlsplit(broker_url)
    vhost = unquote(parts.path[1:]) or "/"
    password = secrets.token_hex(8)
    try:
        rabbitmqctl("add_user", name, password)
    except (OSError, subprocess.SubprocessError):
        rabbitmqctl_missing(f"a broker user of its own ({name})")
    try:
        rabbitmqctl("set_permissions", "-p", vhost, name, ".*", ".*", ".*")
        host = parts.netloc.rsplit("@", 1)[-1]
        yield urlunsplit(parts._replace(netloc=f"{quote(name)}:{password}@{host}"))
    finally:
        rabbitmqctl("delete_user", name)


@contextmanager
def channel_as(url: str) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()
