"""A message the server store refuses never stops the server (both server stores).

The store's own checks (`storage_problem`) keep out what the columns cannot hold; where they
miss something (simulated here by switching them off), the database's refusal still costs
only that message: it is rejected with the database's reason, receipted and dead-lettered,
the rest of its batch is applied, and ingest goes on with the next messages.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import pika
import pytest
import sqlalchemy as sa

from cajasync.broker.ports import REASON_HEADER
from cajasync.core import topology
from cajasync.core.settings import Settings
from inbox.catalog_reads import SqlCatalogReader
from inbox.ingest import IngestStats, run_ingest
from inbox.requests import run_requests
from schemas import CashPayment, OpEnvelope, WeeklyFileChunk, encode
from schemas.feed import SnapshotDone, SnapshotRequest
from tests.integration.test_server_ingest import (
    NOW,
    _held,
    dead_letters,
    envelope,
    publish,
    receipt_items,
    received_down,
)

pytestmark = pytest.mark.rabbitmq

HUGE = Decimal("99999999999999.999")  # below 10^14, but 10^14 once rounded to cents


class Running:
    """Server ingest in a thread, until stopped; what it did and how it ended."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.stop = threading.Event()
        self.seen: list[IngestStats] = []
        self.errors: list[BaseException] = []
        self.progressed = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(engine, settings))

    def start(self) -> None:
        self._thread.start()

    def wait_received(self, count: int) -> IngestStats:
        """The stats once ingest received `count` messages (failing if it stopped)."""
        with self.progressed:
            assert self.progressed.wait_for(
                lambda: self.errors or (self.seen and self.seen[-1].received >= count),
                timeout=30,
            ), f"ingest did not receive {count} messages: {self.seen[-1:]}"
        assert not self.errors, self.errors
        return self.seen[-1]

    def finish(self) -> None:
        """Stop ingest; it must end by itself, without an error."""
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        assert not self._thread.is_alive()
        assert not self.errors, self.errors

    def _run(self, engine: sa.Engine, settings: Settings) -> None:
        try:
            run_ingest(engine, settings, stop=self.stop, on_progress=self._on_progress)
        except BaseException as exc:
            with self.progressed:
                self.errors.append(exc)
                self.progressed.notify_all()

    def _on_progress(self, stats: IngestStats) -> None:
        with self.progressed:
            self.seen.append(stats)
            self.progressed.notify_all()


@pytest.fixture
def ingest(engine: sa.Engine, settings: Settings) -> Iterator[Running]:
    """Server ingest, started by the test when its first messages are queued."""
    running = Running(engine, settings)
    try:
        yield running
    finally:
        running.finish()


def cash_payment(terminal: str, seq: int, amount: Decimal) -> OpEnvelope:
    op = CashPayment(
        kind="advance",
        payee_kind="supplier",
        payee="SUP1",
        amount=amount,
        method="cash",
        date=NOW,
    )
    return msgspec.structs.replace(envelope(terminal, seq), op=op)


def refused_by_the_database(engine: sa.Engine, terminal: str, seq: int) -> OpEnvelope:
    """An operation that passes classify (with the store checks off) but the database refuses:
    an amount beyond NUMERIC(16, 2) on PostgreSQL, a weekly file size beyond int64 on SQLite.
    Either is refused where the operation is applied, not where it is tracked, so the
    rejection itself is recorded and holds the seq."""
    if engine.dialect.name == "postgresql":
        return cash_payment(terminal, seq, HUGE)
    chunk = WeeklyFileChunk(
        week="2026-W10",
        file_name="semana.bin",
        size=2**63,
        sha256="0" * 64,
        chunk_index=0,
        chunk_count=1,
        data=b"x",
    )
    return msgspec.structs.replace(envelope(terminal, seq), op=chunk)


def test_message_the_database_refuses_is_rejected_and_the_rest_of_its_batch_applied(
    engine: sa.Engine,
    settings: Settings,
    channel: Any,
    terminal: str,
    ingest: Running,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # every rule that would catch it before the database is switched off: a gap between the
    # rules and the columns is what this test simulates
    monkeypatch.setattr("inbox.classify.validate", lambda _envelope: None)
    monkeypatch.setattr("inbox.classify.storage_problem", lambda _envelope: None)
    monkeypatch.setattr("inbox.server_store.rules.storage_problem", lambda _envelope: None)
    bad = refused_by_the_database(engine, terminal, 3)
    batch = [envelope(terminal, 1), envelope(terminal, 2), bad, envelope(terminal, 4)]
    for env in batch:
        publish(channel, env)
    later = envelope(terminal, 5)

    ingest.start()  # the four are queued: they come as one batch
    stats = ingest.wait_received(4)
    assert (stats.applied, stats.rejected, stats.dead_lettered) == (3, 1, 1)
    publish(channel, later)  # ingest is still running: the next message is applied
    assert ingest.wait_received(5).applied == 4

    assert _held(engine, terminal)["topics"] == {"ventas": 4}
    assert _held(engine, terminal)["contiguous_seq"] == 5  # the refused seq is held, rejected
    [(_, headers)] = dead_letters(channel, terminal)
    assert "the server store refused it" in headers[REASON_HEADER]
    items = receipt_items(received_down(channel, terminal, lambda m: len(receipt_items(m)) >= 5))
    assert [(i.seq, i.op_id, i.status) for i in items] == [
        (1, batch[0].op_id, "acked"),
        (2, batch[1].op_id, "acked"),
        (3, bad.op_id, "rejected"),
        (4, batch[3].op_id, "acked"),
        (5, later.op_id, "acked"),
    ]
    assert items[2].reason == headers[REASON_HEADER]


def test_cash_payment_that_rounds_to_ten_to_the_fourteen_is_rejected_and_ingest_goes_on(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str, ingest: Running
) -> None:
    huge = cash_payment(terminal, 1, HUGE)
    publish(channel, huge)
    publish(channel, envelope(terminal, 2))
    ingest.start()
    assert ingest.wait_received(2).applied == 1
    publish(channel, envelope(terminal, 3))
    assert ingest.wait_received(3).applied == 2

    assert _held(engine, terminal)["topics"] == {"ventas": 2}
    [(_, headers)] = dead_letters(channel, terminal)
    assert str(HUGE) in headers[REASON_HEADER]
    items = receipt_items(received_down(channel, terminal, lambda m: len(receipt_items(m)) >= 3))
    assert [(i.seq, i.status) for i in items] == [(1, "rejected"), (2, "acked"), (3, "acked")]
    assert items[0].op_id == huge.op_id


class DatabaseSaid(Exception):
    """A DBAPI error with the server's SQLSTATE, as psycopg raises it."""

    sqlstate = "22021"  # invalid byte sequence for encoding


def test_request_whose_reads_the_database_refuses_is_dead_lettered_and_the_next_answered(
    engine: sa.Engine,
    settings: Settings,
    channel: Any,
    terminal: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    heads = SqlCatalogReader.heads
    calls: list[int] = []

    def refuse_first(reader: SqlCatalogReader, streams: Sequence[str]) -> dict[str, int]:
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.DataError("SELECT ...", {}, DatabaseSaid("invalid byte sequence"))
        return heads(reader, streams)

    monkeypatch.setattr(SqlCatalogReader, "heads", refuse_first)
    first, second = snapshot_request(terminal), snapshot_request(terminal)
    publish_request(channel, first)
    publish_request(channel, second)

    stats = run_requests(engine, settings, until_idle=0.5)

    assert (stats.dead_lettered, stats.snapshots) == (1, 1)
    [(body, headers)] = dead_letters_of_requests(channel)
    assert body == encode(first)
    assert "invalid byte sequence" in headers[REASON_HEADER]
    replies = received_down(
        channel, terminal, lambda m: any(isinstance(x, SnapshotDone) for x in m)
    )
    done = [m for m in replies if isinstance(m, SnapshotDone)]
    assert [d.request_id for d in done] == [second.request_id]


def snapshot_request(terminal: str) -> SnapshotRequest:
    return SnapshotRequest(
        terminal=terminal,
        location="L1",
        pos="PV1",
        terminal_kind="retail",
        request_id=uuid.uuid4().hex,
        topics=["productos"],
    )


def publish_request(channel: Any, request: SnapshotRequest) -> None:
    channel.basic_publish(
        topology.UP_EXCHANGE,
        f"req.{request.terminal}.snapshot",
        encode(request),
        pika.BasicProperties(delivery_mode=2, content_type="application/msgpack", user_id="guest"),
    )


def dead_letters_of_requests(channel: Any) -> list[tuple[bytes, dict[str, Any]]]:
    found: list[tuple[bytes, dict[str, Any]]] = []
    while True:
        method, properties, body = channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
        if method is None:
            return found
        found.append((body, properties.headers))
