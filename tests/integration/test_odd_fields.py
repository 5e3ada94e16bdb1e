"""Message fields RabbitMQ accepts but pika cannot decode stop no consumer (real broker).

A timestamp header past year 9999 or a table nested past Python's recursion limit made pika
drop the whole connection while parsing the frame: the message and every unacked one were
delivered again and again until the delivery limit dead-lettered them all without a reason.
A routing key that is not UTF-8 reached ingest as bytes and stopped it. Each is published
here between good messages to server ingest, the request handler and a terminal's relay:
the good ones are handled, the odd one is judged like any other message (dead-lettered with
its reason when its body is garbage), and the consumer keeps running.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.data
import pytest
import sqlalchemy as sa

from cajasync.broker.ports import REASON_HEADER
from cajasync.core import topology
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.processes.terminal_init import init_terminal
from inbox.requests import run_requests
from schemas import encode, topic_of
from schemas.envelope import OpEnvelope
from tests.integration.relay_support import acked, receipt, record_sales, running_relay, states
from tests.integration.test_server_ingest import (
    _held,
    dead_letters,
    envelope,
    receipt_items,
    received_down,
)
from tests.integration.test_server_refusals import Running
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq

GARBAGE = b"\xc1 not msgpack"


class Raw(bytes):
    """A header value published as these exact bytes (type octet included)."""


def far_timestamp() -> Raw:
    return Raw(b"T" + struct.pack(">Q", 2**38))  # year 10680: past datetime's range


def deep_table(levels: int = 600) -> Raw:
    """A table nested `levels` deep: past Python's recursion limit in pika's decoder."""
    inner = b""
    for _ in range(levels):
        inner = b"\x01k" + b"F" + struct.pack(">I", len(inner)) + inner
    return Raw(b"F" + struct.pack(">I", len(inner)) + inner)


ODD_HEADERS: dict[str, Callable[[], Raw]] = {"timestamp": far_timestamp, "nested": deep_table}


def marker(value: Any) -> str:
    """The marker an odd value arrived as (a nested table keeps its first levels)."""
    while isinstance(value, dict):
        [value] = value.values()
    assert isinstance(value, str), value
    return value


@pytest.fixture
def raw_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let this process publish `Raw` header values (pika's encoder never makes these)."""
    encode_value = pika.data.encode_value

    def encode_raw_too(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, Raw):
            pieces.append(bytes(value))
            return len(value)
        return int(encode_value(pieces, value))

    monkeypatch.setattr(pika.data, "encode_value", encode_raw_too)


def publish_op(
    channel: Any,
    env: OpEnvelope,
    *,
    odd: dict[str, Any] | None = None,
    body: bytes | None = None,
    routing_key: str | bytes | None = None,
) -> None:
    """Publish as the relay does, with `odd` header values beside the usual ones."""
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
            headers={"terminal": env.terminal, "seq": env.seq, "topic": topic, **(odd or {})},
        ),
    )


# -- server ingest --------------------------------------------------------------------------


@pytest.fixture
def ingest(engine: sa.Engine, settings: Settings) -> Iterator[Running]:
    running = Running(engine, settings)
    try:
        yield running
    finally:
        running.finish()


@pytest.mark.usefixtures("raw_headers")
@pytest.mark.parametrize("odd", ODD_HEADERS)
def test_undecodable_header_between_good_operations_is_dead_lettered_and_ingest_goes_on(
    odd: str, engine: sa.Engine, channel: Any, terminal: str, ingest: Running
) -> None:
    first, bad, second = (envelope(terminal, seq) for seq in (1, 2, 2))
    publish_op(channel, first)
    publish_op(channel, bad, body=GARBAGE, odd={"when": ODD_HEADERS[odd]()})
    publish_op(channel, second)
    ingest.start()
    stats = ingest.wait_received(3)
    assert (stats.applied, stats.dead_lettered) == (2, 1)

    third = envelope(terminal, 3)  # a real operation with an odd header: headers decide nothing
    publish_op(channel, third, odd={"when": ODD_HEADERS[odd]()})
    assert ingest.wait_received(4).applied == 3

    assert _held(engine, terminal)["contiguous_seq"] == 3
    [(body, headers)] = dead_letters(channel, terminal)
    assert body == GARBAGE
    assert "undecodable" in headers[REASON_HEADER]
    expected = {
        "timestamp": f"<undecodable timestamp {2**38}: year 10680 is out of range>",
        "nested": "<undecodable table: nested deeper than 32 levels>",
    }
    assert marker(headers["when"]) == expected[odd]  # for the operator to see
    items = receipt_items(received_down(channel, terminal, lambda m: len(receipt_items(m)) >= 3))
    assert [(i.seq, i.status) for i in items] == [(1, "acked"), (2, "acked"), (3, "acked")]


def test_routing_key_that_is_not_utf8_is_dead_lettered_and_ingest_goes_on(
    engine: sa.Engine, channel: Any, terminal: str, ingest: Running
) -> None:
    """pika handed the routing key over as bytes, and classifying it stopped ingest."""
    publish_op(channel, envelope(terminal, 1))
    publish_op(channel, envelope(terminal, 2), body=GARBAGE, routing_key=b"op.\xff.ventas")
    publish_op(channel, envelope(terminal, 2))
    ingest.start()
    stats = ingest.wait_received(3)
    assert (stats.applied, stats.dead_lettered) == (2, 1)
    assert _held(engine, terminal)["contiguous_seq"] == 2
    [(body, headers)] = dead_letters(channel, terminal)
    assert body == GARBAGE
    assert headers["x-cajasync-routing-key"] == "op.\\xff.ventas"


# -- the request handler --------------------------------------------------------------------


def snapshot_request(terminal: str) -> bytes:
    from schemas.feed import SnapshotRequest

    request = SnapshotRequest(
        terminal=terminal,
        location="L1",
        pos="PV1",
        terminal_kind="retail",
        request_id=uuid.uuid4().hex,
        topics=["productos"],
    )
    return encode(request)


@pytest.mark.usefixtures("raw_headers")
@pytest.mark.parametrize("odd", ODD_HEADERS)
def test_request_with_an_undecodable_header_is_dead_lettered_and_the_others_answered(
    odd: str, engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    def publish(body: bytes, headers: dict[str, Any]) -> None:
        channel.basic_publish(
            topology.UP_EXCHANGE,
            f"req.{terminal}.snapshot",
            body,
            pika.BasicProperties(delivery_mode=2, user_id="guest", headers=headers),
        )

    publish(snapshot_request(terminal), {"terminal": terminal})
    publish(GARBAGE, {"terminal": terminal, "when": ODD_HEADERS[odd]()})
    publish(snapshot_request(terminal), {"terminal": terminal, "when": ODD_HEADERS[odd]()})
    publish(snapshot_request(terminal), {"terminal": terminal})

    stats = run_requests(engine, settings, until_idle=1.0)

    assert (stats.received, stats.snapshots, stats.dead_lettered) == (4, 3, 1)
    [(body, headers)] = dead_letters(channel, terminal)
    assert body == GARBAGE
    assert "undecodable request" in headers[REASON_HEADER]
    assert marker(headers["when"]).startswith("<undecodable ")


# -- a terminal's relay, consuming its own queue ---------------------------------------------


@pytest.mark.usefixtures("raw_headers", "clean_broker")
@pytest.mark.parametrize("odd", ODD_HEADERS)
def test_terminal_relay_drops_a_message_with_an_undecodable_header_and_takes_the_next(
    odd: str, tmp_path: Path, settings: Settings, new_terminal_id: Callable[[], str]
) -> None:
    terminal = new_terminal_id()
    identity = TerminalIdentity(terminal, "L1", "PV1", "retail")
    engine = init_terminal(str(tmp_path / "till.db"), identity, settings)
    try:
        record_sales(engine, 3)
        with running_relay(engine, settings) as relay:
            wait_for(lambda: set(states(engine).values()) == {"sent"}, "the confirms", relay)
            down = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
            channel = down.channel()

            def send(body: bytes, headers: dict[str, Any]) -> None:
                channel.basic_publish(
                    topology.DOWN_EXCHANGE,
                    topology.terminal_routing_key(terminal),
                    body,
                    pika.BasicProperties(delivery_mode=2, headers=headers),
                )

            odd_header = {"when": ODD_HEADERS[odd]()}
            send(encode(receipt(terminal, acked(engine, 1))), {})
            send(GARBAGE, odd_header)
            send(encode(receipt(terminal, acked(engine, 2))), odd_header)
            send(encode(receipt(terminal, acked(engine, 3))), {})
            down.close()
            wait_for(lambda: set(states(engine).values()) == {"acked"}, "the receipts", relay)
            stats = relay.finish()
        assert (stats.receipts, stats.acked) == (3, 3)
    finally:
        engine.dispose()
