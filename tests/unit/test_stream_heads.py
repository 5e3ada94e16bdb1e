"""Stream heads on the wire: where they are routed, what they hold, who can read them."""

from __future__ import annotations

import msgspec
import pytest

from cajasync.broker.stub import Message, StubBroker
from cajasync.core import topology
from cajasync.core.topology import heads_routing_key
from outbox.feed_relay import heads_messages
from schemas.codec import decode_terminal_inbox
from schemas.feed import ChangeEvent
from schemas.topics import TERMINAL_KINDS


@pytest.mark.parametrize("kind", TERMINAL_KINDS)
@pytest.mark.parametrize("scope", ["all", "loc.L1", "pos.PV1", "term.T1"])
def test_every_terminal_of_a_scope_reads_the_routing_key_of_its_heads(
    kind: str, scope: str
) -> None:
    assert _reaches("T1", "L1", "PV1", kind, heads_routing_key(scope))


def test_a_terminal_elsewhere_does_not_read_another_scopes_heads() -> None:
    for scope in ("loc.L1", "pos.PV1", "term.T1"):
        assert not _reaches("T2", "L2", "PV2", "retail", heads_routing_key(scope))


def _reaches(terminal: str, location: str, pos: str, kind: str, key: str | None) -> bool:
    """Whether a message published with `key` reaches the till: by its queue's bindings or
    by one of the streams it reads."""
    broker = StubBroker()
    queue = topology.declare_terminal(broker.channel(), terminal, location, pos, kind)
    assert key is not None
    broker.publish(Message(topology.DOWN_EXCHANGE, key, b"heads"))
    read = [queue, *topology.terminal_streams(location)]
    return any(broker.messages(name) for name in read)


def test_heads_go_out_one_message_per_scope_holding_that_scopes_streams() -> None:
    heads = {"productos:all": 7, "mesas:all": 2, "stock:loc.L1": 40, "talonarios:pos.PV1": 3}

    messages = {key: decode_terminal_inbox(body) for key, body in heads_messages(heads)}

    assert messages == {
        "chg.configuracion.all": ChangeEvent(
            changes=[], heads={"mesas:all": 2, "productos:all": 7}
        ),
        "chg.stock.loc.L1": ChangeEvent(changes=[], heads={"stock:loc.L1": 40}),
        "chg.formas-de-pago.pos.PV1": ChangeEvent(changes=[], heads={"talonarios:pos.PV1": 3}),
    }


def test_a_terminal_that_predates_heads_reads_them_as_an_event_without_changes() -> None:
    class OldChangeEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="change"):
        changes: list[object]

    ((_key, body),) = heads_messages({"productos:all": 7})

    assert msgspec.msgpack.decode(body, type=OldChangeEvent) == OldChangeEvent(changes=[])
