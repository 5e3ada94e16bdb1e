"""Server ingest against the real RabbitMQ and both server stores (SQLite, PostgreSQL).

Operations are published the way the terminal relay publishes them; the server runs until
idle (or in a thread until stopped) and the test reads the store and the terminal's queue.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pytest
import sqlalchemy as sa

from cajasync.broker.ports import REASON_HEADER, ROUTING_KEY_HEADER
from cajasync.core import topology
from cajasync.core.db import current_revision, head_revision, make_engine
from cajasync.core.settings import Settings
from cajasync.errors import StoreError
from cajasync.processes.server_init import init_server
from inbox.ingest import Ingest, IngestStats, run_ingest, server_stats
from inbox.server_store import Incoming, MemoryServerStore, Verdict
from schemas import (
    OpEnvelope,
    Receipt,
    ReceiptItem,
    ReplayRequest,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    decode_down,
    encode,
    topic_of,
)

pytestmark = pytest.mark.rabbitmq

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
IDLE_S = 0.5


def sale(number: int = 1) -> Sale:
    line = SaleLine(product="P1", quantity=Decimal(2), unit_price=Decimal(5), tax_rate=Decimal(21))
    lines = [line]
    totals = SaleTotals.of(lines)
    return Sale(
        book="A",
        number=number,
        date=NOW,
        seller="S1",
        lines=lines,
        payments=[SalePayment(method="cash", amount=totals.total)],
        totals=totals,
    )


def envelope(terminal: str, seq: int, *, op_id: uuid.UUID | None = None) -> OpEnvelope:
    return OpEnvelope(
        terminal=terminal,
        seq=seq,
        op_id=op_id or uuid.uuid4(),
        version=1,
        recorded_at=NOW,
        op=sale(seq),
    )


def publish(
    channel: Any,
    env: OpEnvelope,
    *,
    body: bytes | None = None,
    routing_key: str | None = None,
) -> None:
    """Publish as the relay does: persistent msgpack, message id, user id and headers."""
    topic = topic_of(env.op)
    channel.basic_publish(
        topology.UP_EXCHANGE,
        routing_key or topology.op_routing_key(env.terminal, topic),
        encode(env) if body is None else body,
        pika.BasicProperties(
            delivery_mode=2,
            content_type="application/msgpack",
            message_id=f"{env.op_id}/{env.version}",
            user_id="guest",
            headers={"terminal": env.terminal, "seq": env.seq, "topic": topic},
        ),
    )


def received_down(channel: Any, terminal: str, want: Callable[[list[Any]], bool]) -> list[Any]:
    """Down messages on the terminal's queue, waiting (a few seconds at most) until `want`."""
    messages: list[Any] = []
    deadline = time.monotonic() + 5
    while not want(messages) and time.monotonic() < deadline:
        method, _, body = channel.basic_get(topology.terminal_queue(terminal), auto_ack=True)
        if method is None:
            time.sleep(0.05)
        else:
            messages.append(decode_down(body))
    return messages


def receipt_items(messages: list[Any]) -> list[ReceiptItem]:
    return [item for m in messages if isinstance(m, Receipt) for item in m.items]


def dead_letters(channel: Any, terminal: str) -> list[tuple[bytes, dict[str, Any]]]:
    """The messages of `terminal` on `cajasync.dead`, with their headers."""
    found: list[tuple[bytes, dict[str, Any]]] = []
    while True:
        method, properties, body = channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
        if method is None:
            return found
        if (properties.headers or {}).get("terminal") == terminal:
            found.append((body, properties.headers))


def _held(engine: sa.Engine, terminal: str) -> dict[str, Any]:
    rows = [t for t in server_stats(engine)["terminals"] if t["terminal"] == terminal]
    return rows[0] if rows else {}


def test_published_sales_are_applied_and_receipted(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    envelopes = [envelope(terminal, seq) for seq in (1, 2, 3)]
    for env in envelopes:
        publish(channel, env)
    stats = run_ingest(engine, settings, until_idle=IDLE_S)
    assert stats.applied >= 3
    assert _held(engine, terminal) == {
        "terminal": terminal,
        "contiguous_seq": 3,
        "max_seq": 3,
        "topics": {"ventas": 3},
        "weekly_chunks": 0,
        "lost_seqs": 0,
        "gap": None,
        # never set up again: no registered incarnation, no second copy
        "incarnation": None,
        "restarted_after_seq": None,
        "incarnations": 0,
        "copies": 0,
        "copy_ops_rejected": 0,
    }
    items = receipt_items(received_down(channel, terminal, lambda m: len(receipt_items(m)) >= 3))
    assert [(i.seq, i.op_id, i.status) for i in items] == [
        (env.seq, env.op_id, "acked") for env in envelopes
    ]


def test_poison_message_is_dead_lettered_while_the_good_ones_are_applied(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    good_1, poison, good_3 = (envelope(terminal, seq) for seq in (1, 2, 3))
    publish(channel, good_1)
    publish(channel, poison, body=b"\xc1 not msgpack")
    publish(channel, good_3)
    run_ingest(engine, settings, until_idle=IDLE_S)
    # garbage proves no seq: seq 2 stays missing, and is asked for again
    held = _held(engine, terminal)
    gap = held.pop("gap")
    assert (gap["from_seq"], gap["to_seq"]) == (2, 2)
    assert gap["asked"] >= 1
    assert gap["open_since"] <= gap["last_asked"]
    assert held == {
        "terminal": terminal,
        "contiguous_seq": 1,
        "max_seq": 3,
        "topics": {"ventas": 2},
        "weekly_chunks": 0,
        "lost_seqs": 0,
        "incarnation": None,
        "restarted_after_seq": None,
        "incarnations": 0,
        "copies": 0,
        "copy_ops_rejected": 0,
    }
    [(body, headers)] = dead_letters(channel, terminal)
    assert body == b"\xc1 not msgpack"
    assert "undecodable" in headers[REASON_HEADER]
    assert headers[ROUTING_KEY_HEADER] == f"op.{terminal}.ventas"
    messages = received_down(
        channel, terminal, lambda m: any(isinstance(x, ReplayRequest) for x in m)
    )
    assert [(i.seq, i.op_id, i.status) for i in receipt_items(messages)] == [
        (1, good_1.op_id, "acked"),
        (3, good_3.op_id, "acked"),
    ]  # nobody proved the garbage came from this terminal: no rejected receipt
    assert ReplayRequest(terminal=terminal, from_seq=2, to_seq=2) in messages


def test_operation_published_under_another_terminal_is_dead_lettered_and_claims_nothing(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    impostor = envelope("SOMEONE-ELSE", 1)
    publish(channel, impostor, routing_key=topology.op_routing_key(terminal, "ventas"))
    publish(channel, envelope(terminal, 1))
    run_ingest(engine, settings, until_idle=IDLE_S)
    assert _held(engine, "SOMEONE-ELSE") == {}
    assert _held(engine, terminal)["contiguous_seq"] == 1
    [(_, headers)] = dead_letters(channel, "SOMEONE-ELSE")
    assert "does not match" in headers[REASON_HEADER]
    [item] = receipt_items(received_down(channel, terminal, lambda m: len(m) >= 1))
    assert item.status == "acked"  # the real seq 1; the impostor got no receipt


def test_duplicate_delivered_three_times_is_applied_once(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    env = envelope(terminal, 1)
    for _ in range(3):
        publish(channel, env)
    run_ingest(engine, settings, until_idle=IDLE_S)
    run_ingest(engine, settings, until_idle=IDLE_S)  # a later batch sees it as held too
    publish(channel, env)
    stats = run_ingest(engine, settings, until_idle=IDLE_S)
    assert stats.duplicates >= 1
    assert _held(engine, terminal)["topics"] == {"ventas": 1}
    items = receipt_items(received_down(channel, terminal, lambda m: len(receipt_items(m)) >= 4))
    assert [(i.seq, i.status) for i in items] == [(1, "acked")] * 4


def test_missing_seqs_are_requested_again(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    for seq in (1, 2, 5, 6):
        publish(channel, envelope(terminal, seq))
    stats = run_ingest(engine, settings, until_idle=IDLE_S)
    assert stats.replays_requested >= 1
    messages = received_down(
        channel, terminal, lambda m: any(isinstance(x, ReplayRequest) for x in m)
    )
    replays = [m for m in messages if isinstance(m, ReplayRequest)]
    assert replays[0] == ReplayRequest(terminal=terminal, from_seq=3, to_seq=4)
    assert _held(engine, terminal)["contiguous_seq"] == 2


class FailingStore(MemoryServerStore):
    """A store whose database is gone."""

    def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
        raise StoreError("the disk is full")


def test_batch_is_given_back_to_the_queue_when_the_store_fails(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    publish(channel, envelope(terminal, 1))
    with pytest.raises(StoreError, match="disk is full"):
        Ingest(FailingStore(), settings, until_idle=IDLE_S).run()
    run_ingest(engine, settings, until_idle=IDLE_S)
    assert _held(engine, terminal)["contiguous_seq"] == 1
    [item] = receipt_items(received_down(channel, terminal, lambda m: len(m) >= 1))
    assert item.status == "acked"


def test_server_in_a_thread_stops_when_asked(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    stop = threading.Event()
    applied = threading.Event()
    seen: list[IngestStats] = []

    def on_progress(stats: IngestStats) -> None:
        seen.append(stats)
        if stats.applied:
            applied.set()

    thread = threading.Thread(
        target=run_ingest,
        args=(engine, settings),
        kwargs={"stop": stop, "on_progress": on_progress},
    )
    thread.start()
    publish(channel, envelope(terminal, 1))
    assert applied.wait(10)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert seen[-1].applied >= 1
    assert _held(engine, terminal)["contiguous_seq"] == 1


def test_stop_ends_the_reconnect_loop_while_the_broker_is_unreachable(
    engine: sa.Engine, settings: Settings
) -> None:
    unreachable = settings.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:1/%2F")
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    stats = run_ingest(engine, unreachable, stop=stop)
    timer.join()
    assert stats.received == 0


def test_init_server_migrates_the_store_and_declares_the_topology(
    tmp_path: Path, settings: Settings, clean_broker: str, channel: Any
) -> None:
    target = str(tmp_path / "server.db")
    init_server(target, settings)
    init_server(target, settings)  # idempotent
    engine = make_engine(target)
    assert current_revision(engine, "server") == head_revision("server")
    engine.dispose()
    channel.queue_declare(topology.OPS_QUEUE, passive=True)
