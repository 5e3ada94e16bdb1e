"""The stub broker behaves as RabbitMQ does for what cajasync declares: routing, confirms,
returns, acks and nacks, redelivery and the delivery limit."""

from __future__ import annotations

from typing import Any

import pytest

from cajasync.broker.ports import Delivery
from cajasync.broker.stub import Message, StubBroker, StubLink, topic_matches
from cajasync.core import topology
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.topology import StreamStart
from cajasync.errors import BrokerUnavailable

OPS = topology.OPS_QUEUE


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker()
    topology.declare_server(broker.channel())
    return broker


def op(terminal: str = "T1", seq: int = 1) -> Message:
    return Message(
        topology.UP_EXCHANGE,
        topology.op_routing_key(terminal, "ventas"),
        b"op",
        headers={"seq": seq},
    )


def take_all(broker: StubBroker, queue: str, *, prefetch: int = 0) -> list[Delivery]:
    """Every delivery a fresh consume session gets now (left unacked)."""
    taken: list[Delivery] = []
    with broker.consuming(
        queue, prefetch=prefetch, declare=lambda _c: None, connecting="testing", stop=None
    ) as session:
        for delivery in session.deliveries(timeout=0):
            if delivery is None:
                break
            taken.append(delivery)
        session.out.nack(taken[-1].delivery_tag) if taken else None
    return taken


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("op.#", "op.T1.ventas", True),
        ("op.#", "op", True),
        ("op.*", "op.T1.ventas", False),
        ("chg.*.all", "chg.productos.all", True),
        ("chg.*.all", "chg.productos.loc.L1", False),
        ("req.#", "op.T1.ventas", False),
        ("#.ventas", "op.T1.ventas", True),
    ],
)
def test_topic_bindings_match_words_with_star_and_hash(
    pattern: str, key: str, matches: bool
) -> None:
    assert topic_matches(pattern, key) is matches


def test_an_operation_is_routed_to_the_ops_queue_and_a_request_to_the_requests_queue(
    broker: StubBroker,
) -> None:
    broker.publish(op())
    broker.publish(Message(topology.UP_EXCHANGE, "req.T1.snapshot", b"req"))
    assert [m.body for m in broker.messages(OPS)] == [b"op"]
    assert [m.body for m in broker.messages(topology.REQUESTS_QUEUE)] == [b"req"]


def test_a_terminal_queue_gets_its_replies_and_its_own_changes_the_streams_the_shared_ones() -> (
    None
):
    broker = StubBroker()
    queue = topology.declare_terminal(broker.channel(), "T1", "L1", "PV1", "retail")
    keys = [
        "t.T1",
        "t.T2",
        "chg.productos.all",
        "chg.stock.loc.L1",
        "chg.stock.loc.L2",
        "chg.mesas.all",
        "chg.formas-de-pago.pos.PV1",
        "chg.formas-de-pago.pos.PV2",
    ]
    for key in keys:
        broker.publish(Message(topology.DOWN_EXCHANGE, key, key.encode()))
    assert [m.routing_key for m in broker.messages(queue)] == [
        "t.T1",
        "chg.formas-de-pago.pos.PV1",
    ]
    everyone, here = topology.terminal_streams("L1")
    # a stream holds every kind's changes: the till's consumer skips the tables
    assert [m.routing_key for m in broker.messages(everyone)] == [
        "chg.productos.all",
        "chg.mesas.all",
    ]
    assert [m.routing_key for m in broker.messages(here)] == ["chg.stock.loc.L1"]


def test_a_mandatory_publish_nothing_is_bound_to_is_returned_and_still_acked(
    broker: StubBroker,
) -> None:
    confirm = broker.publish(Message(topology.DOWN_EXCHANGE, "t.nobody", b""), mandatory=True)
    assert (confirm.ok, confirm.returned) == (True, True)


def test_a_publish_to_a_refusing_queue_is_nacked(broker: StubBroker) -> None:
    broker.refusing.add(OPS)
    assert broker.publish(op()).ok is False


def test_a_nacked_delivery_comes_again_first_flagged_redelivered_and_counted(
    broker: StubBroker,
) -> None:
    broker.publish(op(seq=1))
    broker.publish(op(seq=2))
    first = take_all(broker, OPS, prefetch=1)
    assert [d.headers["seq"] for d in first] == [1]
    [again, second] = broker.messages(OPS)
    assert (again.headers["seq"], again.redelivered, again.headers["x-delivery-count"]) == (
        1,
        True,
        1,
    )
    assert (second.headers["seq"], second.redelivered) == (2, False)


def test_deliveries_unacked_when_a_session_ends_go_back_to_the_queue(broker: StubBroker) -> None:
    broker.publish(op())
    with broker.consuming(
        OPS, prefetch=10, declare=lambda _c: None, connecting="testing", stop=None
    ) as session:
        assert next(session.deliveries(timeout=0)) is not None
        assert broker.messages(OPS) == []
    [back] = broker.messages(OPS)
    assert back.redelivered


def test_an_operation_returned_past_the_delivery_limit_is_dead_lettered(
    broker: StubBroker,
) -> None:
    broker.publish(op())
    for _ in range(topology.DELIVERY_LIMIT + 1):
        assert len(take_all(broker, OPS)) == 1
    assert broker.messages(OPS) == []
    [dead] = broker.messages(topology.DEAD_QUEUE)
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert dead.headers["x-first-death-queue"] == OPS
    assert dead.routing_key == "op.T1.ventas"


def test_a_rejected_operation_is_dead_lettered_and_a_rejected_reply_dropped() -> None:
    broker = StubBroker()
    topology.declare_server(broker.channel())
    queue = topology.declare_terminal(broker.channel(), "T1", "L1", "PV1", "retail")
    broker.publish(op())
    broker.publish(Message(topology.DOWN_EXCHANGE, "t.T1", b"reply"))
    for name in (OPS, queue):
        broker.give_back(name, [broker.get(name)], requeue=False)  # type: ignore[list-item]
    [dead] = broker.messages(topology.DEAD_QUEUE)
    assert dead.headers["x-first-death-reason"] == "rejected"
    assert broker.messages(queue) == []


def test_an_unavailable_broker_refuses_sessions_and_a_drop_ends_the_open_ones(
    broker: StubBroker,
) -> None:
    broker.available = False
    with (
        pytest.raises(BrokerUnavailable),
        broker.consuming(OPS, prefetch=1, declare=lambda _c: None, connecting="x", stop=None),
    ):
        pass
    broker.available = True
    with broker.consuming(
        OPS, prefetch=1, declare=lambda _c: None, connecting="x", stop=None
    ) as session:
        broker.drop_connections()
        with pytest.raises(BrokerUnavailable):
            next(session.deliveries(timeout=0))


class Recorder:
    """A LinkHandler that records what the session tells it and acks what it receives."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.link: StubLink | None = None

    def wants_stop(self) -> bool:
        return False

    def on_ready(self) -> None:
        assert self.link is not None
        self.events.append(("ready",))
        headers = {"terminal": "T1", "seq": 1, "topic": "ventas"}
        self.link.publish("op.T1.ventas", b"op", message_id="a/1", headers=headers)
        self.link.publish("op.T1.nowhere", b"op", message_id="b/1", headers={**headers, "seq": 2})

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        self.events.append(("confirm", tag, ok))
        self._close_when_done()

    def on_return(self, seq: int, reason: str) -> None:
        self.events.append(("return", seq, "unroutable" in reason))

    def on_message(self, tag: int, routing_key: str, body: bytes) -> None:
        assert self.link is not None
        self.events.append(("message", routing_key, body))
        self.link.ack(tag, multiple=True)

    def stream_starts(self) -> dict[str, StreamStart]:
        return {}  # reads its queue alone

    def on_stream_message(
        self, tag: int, stream: str, offset: int, routing_key: str, body: bytes
    ) -> None:
        raise AssertionError("reads no stream")
        self._close_when_done()

    def _close_when_done(self) -> None:
        assert self.link is not None
        kinds = [event[0] for event in self.events]
        if kinds.count("confirm") == 2 and "message" in kinds:
            self.link.close()


def test_a_terminal_session_confirms_returns_before_its_ack_and_delivers_its_queue() -> None:
    broker = StubBroker()
    topology.declare_terminal(broker.channel(), "T1", "L1", "PV1", "retail")
    broker.channel().queue_declare(OPS)
    broker.channel().queue_bind(OPS, topology.UP_EXCHANGE, routing_key="op.*.ventas")
    identity = TerminalIdentity("T1", "L1", "PV1", "retail")
    recorder = Recorder()
    link = broker.terminal_link(Settings(), identity, recorder, prefetch=10)
    recorder.link = link
    broker.publish(Message(topology.DOWN_EXCHANGE, "t.T1", b"receipt"))
    link.run()
    publishes = [event for event in recorder.events if event[0] in ("confirm", "return")]
    assert publishes == [("confirm", 1, True), ("return", 2, True), ("confirm", 2, True)]
    assert ("message", "t.T1", b"receipt") in recorder.events
    assert recorder.events[0] == ("ready",)
    assert [m.body for m in broker.messages(OPS)] == [b"op"]
    assert broker.messages(topology.terminal_queue("T1")) == []
