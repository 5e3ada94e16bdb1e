"""Server ingest and the request handler on the stub broker: the one consumer loop, its
acks after the store, its dead letters and the queue's delivery limit, without RabbitMQ."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cajasync.broker.ports import REASON_HEADER, ROUTING_KEY_HEADER
from cajasync.broker.stub import Message, StubBroker
from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.settings import Settings
from cajasync.errors import StoreDataError, StoreError
from inbox.ingest import Ingest
from inbox.requests import run_requests
from inbox.server_store import Incoming, MemoryServerStore, Verdict
from inbox.server_store.base import Accepted
from schemas import CashPayment, OpEnvelope
from schemas.codec import decode_down, encode
from schemas.envelope import Receipt
from schemas.feed import SnapshotDone, SnapshotRequest
from schemas.ops import topic_of

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
IDLE_S = 0.2
SETTINGS = Settings(retry_initial_s=0.01, retry_max_s=0.05)


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker()
    topology.declare_server(broker.channel())
    topology.declare_terminal(broker.channel(), "T1", "L1", "PV1", "retail")
    return broker


def envelope(seq: int, amount: int = 10) -> OpEnvelope:
    payment = CashPayment(
        kind="transfer",
        payee_kind="employee",
        payee="E1",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )
    return OpEnvelope(
        terminal="T1", seq=seq, op_id=uuid.uuid4(), version=1, recorded_at=NOW, op=payment
    )


def send_op(broker: StubBroker, env: OpEnvelope, *, body: bytes | None = None) -> None:
    """Publish an operation as the terminal's relay does."""
    topic = topic_of(env.op)
    headers = {"terminal": env.terminal, "seq": env.seq, "topic": topic}
    broker.publish(
        Message(
            topology.UP_EXCHANGE,
            topology.op_routing_key(env.terminal, topic),
            encode(env) if body is None else body,
            message_id=f"{env.op_id}/{env.version}",
            user_id="guest",
            headers=headers,
        )
    )


def receipts(broker: StubBroker) -> list[Receipt]:
    found = [decode_down(m.body) for m in broker.messages(topology.terminal_queue("T1"))]
    return [message for message in found if isinstance(message, Receipt)]


def ingest(broker: StubBroker, store: Any) -> Any:
    return Ingest(store, SETTINGS, broker=broker, until_idle=IDLE_S).run()


# -- server ingest -------------------------------------------------------------------------


def test_operations_in_are_applied_acked_and_answered_with_one_receipt(
    broker: StubBroker,
) -> None:
    store = MemoryServerStore()
    for seq in (1, 2, 3):
        send_op(broker, envelope(seq))
    stats = ingest(broker, store)
    assert (stats.received, stats.applied, stats.receipts_sent) == (3, 3, 1)
    [receipt] = receipts(broker)
    assert [(item.seq, item.status) for item in receipt.items] == [
        (1, "acked"),
        (2, "acked"),
        (3, "acked"),
    ]
    assert broker.messages(topology.OPS_QUEUE) == []
    assert [s.contiguous_seq for s in store.stats()] == [3]


def test_a_message_that_does_not_decode_is_dead_lettered_with_its_reason(
    broker: StubBroker,
) -> None:
    broker.publish(Message(topology.UP_EXCHANGE, "op.T1.ventas", b"\xc1", user_id="guest"))
    send_op(broker, envelope(1))
    stats = ingest(broker, MemoryServerStore())
    assert (stats.applied, stats.dead_lettered) == (1, 1)
    [dead] = broker.messages(topology.DEAD_QUEUE)
    assert dead.body == b"\xc1"
    assert dead.headers[ROUTING_KEY_HEADER] == "op.T1.ventas"
    assert dead.headers[REASON_HEADER]
    assert broker.messages(topology.OPS_QUEUE) == []


class Refusing(MemoryServerStore):
    """A store whose database refuses any batch holding seq 2 (a value out of range)."""

    def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
        if any(isinstance(item, Accepted) and item.envelope.seq == 2 for item in batch):
            raise StoreDataError("the database refused the batch", "numeric field overflow")
        return super().apply(batch)


def test_an_operation_the_store_refuses_is_isolated_and_the_rest_of_its_batch_applied(
    broker: StubBroker,
) -> None:
    for seq in (1, 2, 3):
        send_op(broker, envelope(seq))
    stats = ingest(broker, Refusing())
    assert (stats.applied, stats.rejected, stats.dead_lettered) == (2, 1, 1)
    [dead] = broker.messages(topology.DEAD_QUEUE)
    assert "numeric field overflow" in dead.headers[REASON_HEADER]
    statuses = [(i.seq, i.status) for r in receipts(broker) for i in r.items]
    assert sorted(statuses) == [(1, "acked"), (2, "rejected"), (3, "acked")]


class Broken(MemoryServerStore):
    """A store that fails every batch for good."""

    def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
        raise StoreError("the store is broken")


def test_a_batch_the_store_keeps_failing_is_given_back_until_the_delivery_limit_dead_letters_it(
    broker: StubBroker,
) -> None:
    send_op(broker, envelope(1))
    for _ in range(topology.DELIVERY_LIMIT):
        with pytest.raises(StoreError):
            ingest(broker, Broken())
        [back] = broker.messages(topology.OPS_QUEUE)
        assert back.redelivered
    with pytest.raises(StoreError):
        ingest(broker, Broken())
    assert broker.messages(topology.OPS_QUEUE) == []
    [dead] = broker.messages(topology.DEAD_QUEUE)
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert dead.headers["x-delivery-count"] == topology.DELIVERY_LIMIT + 1


def test_a_broker_that_is_away_at_first_is_waited_for_with_the_reconnect_policy(
    broker: StubBroker,
) -> None:
    send_op(broker, envelope(1))
    broker.refuse_sessions(2)
    assert ingest(broker, MemoryServerStore()).applied == 1


def test_a_broker_lost_mid_session_gives_the_unacked_batch_back_and_ingest_reconnects(
    broker: StubBroker,
) -> None:
    class DropsOnce(MemoryServerStore):
        dropped = False

        def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
            if not self.dropped:
                self.dropped = True
                broker.drop_connections()  # the batch is applied, its ack will not get through
            return super().apply(batch)

    send_op(broker, envelope(1))
    stats = ingest(broker, DropsOnce())
    assert stats.received == 1  # the first session's batch died with it before its count
    assert (stats.duplicates, stats.receipts_sent) == (1, 1)
    assert broker.messages(topology.OPS_QUEUE) == []


# -- the request handler -------------------------------------------------------------------


@pytest.fixture
def server_engine(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    upgrade(engine, "server")
    yield engine
    engine.dispose()


def snapshot(terminal: str = "T1") -> SnapshotRequest:
    return SnapshotRequest(
        terminal=terminal,
        location="L1",
        pos="PV1",
        terminal_kind="retail",
        request_id=uuid.uuid4().hex,
        topics=["productos"],
    )


def send_request(broker: StubBroker, body: bytes, terminal: str = "T1") -> None:
    routing_key = topology.request_routing_key(terminal, "snapshot")
    broker.publish(Message(topology.UP_EXCHANGE, routing_key, body, user_id="guest"))


def answer(broker: StubBroker, engine: sa.Engine) -> Any:
    return run_requests(engine, SETTINGS, until_idle=IDLE_S, broker=broker)


def test_a_snapshot_request_is_answered_to_the_terminals_queue_and_acked(
    broker: StubBroker, server_engine: sa.Engine
) -> None:
    request = snapshot()
    send_request(broker, encode(request))
    stats = answer(broker, server_engine)
    assert (stats.received, stats.snapshots, stats.dead_lettered) == (1, 1, 0)
    replies = [decode_down(m.body) for m in broker.messages(topology.terminal_queue("T1"))]
    assert isinstance(replies[-1], SnapshotDone)
    assert replies[-1].request_id == request.request_id
    assert broker.messages(topology.REQUESTS_QUEUE) == []


def test_an_undecodable_request_is_dead_lettered_and_the_next_one_answered(
    broker: StubBroker, server_engine: sa.Engine
) -> None:
    send_request(broker, b"\xc1 not msgpack")
    send_request(broker, encode(snapshot()))
    stats = answer(broker, server_engine)
    assert (stats.received, stats.snapshots, stats.dead_lettered) == (2, 1, 1)
    [dead] = broker.messages(topology.DEAD_QUEUE)
    assert "undecodable request" in dead.headers[REASON_HEADER]


def test_a_request_of_a_terminal_without_a_queue_is_counted_undeliverable_and_acked(
    broker: StubBroker, server_engine: sa.Engine
) -> None:
    send_request(broker, encode(snapshot("T9")), terminal="T9")
    stats = answer(broker, server_engine)
    assert (stats.received, stats.undeliverable, stats.replies_sent) == (1, 1, 0)
    assert broker.messages(topology.REQUESTS_QUEUE) == []
