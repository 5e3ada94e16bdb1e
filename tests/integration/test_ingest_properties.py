"""Property: nothing a forger or a broken client publishes stops ingest or touches a real till.

Random bytes and well-formed but wrong envelopes (another terminal's route, another topic,
another broker user, no user_id, a seq or version beyond the store, bad totals, garbage
headers, the real till's own op ids) are published interleaved with a real terminal's valid
operations into real ingest (RabbitMQ, SQLite and PostgreSQL). Each bad message must be
dead-lettered once with its reason; the real terminal's operations must all be applied
exactly once, none rejected; and ingest must still be running at the end.
"""

from __future__ import annotations

import dataclasses
import string
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cajasync.core import topology
from cajasync.core.settings import Settings
from schemas import OpEnvelope, Operation, SaleTotals, encode, topic_of
from tests.integration.ingest_support import (
    NOW,
    RunningServer,
    broker_user,
    channel_as,
    envelope,
    held_ops,
    publish,
    reason_of,
    running_server,
    sale,
    take_dead,
    take_receipt_items,
    tracking_rows,
)
from tests.unit.strategies import operations
from tests.waiting import wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

TOPICS = ["ventas", "pagos", "cierres-z", "archivos-semanales"]
MARK = "x-test-message"
BIG = st.integers(2**31, 2**63 - 1)  # beyond the store's 32-bit seq and version columns


@dataclasses.dataclass(frozen=True)
class Message:
    """One message to publish, and as whom: guest, guest without user_id, or the rogue user."""

    body: bytes
    routing_key: str
    user: str
    message_id: str | None = None
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class World:
    """Who is who in one example."""

    till: str  # the real terminal
    neighbour: str  # another real terminal, whose own invalid operations are also published
    rogue: str  # a broker user of its own that is not the till
    reals: list[OpEnvelope]

    def route(self, terminal: str, topic: str = "ventas") -> str:
        return topology.op_routing_key(terminal, topic)


no_surrogates = st.characters(codec="utf-8")
header_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.text(no_surrogates, max_size=30),
    st.booleans(),
    st.lists(st.integers(0, 10), max_size=3),
)
garbage_headers = st.dictionaries(
    st.sampled_from(["seq", "terminal", "topic"])
    | st.text(string.ascii_letters + "-", min_size=1, max_size=20),
    header_values,
    max_size=4,
)


BAD_TOTALS = msgspec.structs.replace(
    sale(), totals=SaleTotals(net=Decimal(1), tax=Decimal(0), total=Decimal(1))
)


def rogues(world: World) -> st.SearchStrategy[Message]:
    """Every kind of message that must not touch the till."""
    till = world.till
    keys = [(env.op_id, env.version) for env in world.reals]
    seqs = st.sampled_from([env.seq for env in world.reals]) | st.integers(1, 10) | BIG
    op_ids = st.sampled_from([op_id for op_id, _ in keys]) | st.uuids()
    ops: st.SearchStrategy[Operation] = operations | st.just(BAD_TOTALS)
    message_ids = (
        st.none()
        | st.sampled_from([f"{o}/{v}" for o, v in keys])
        | st.text(no_surrogates, max_size=40)
    )

    def envelopes(terminal: str, seq: st.SearchStrategy[int]) -> st.SearchStrategy[OpEnvelope]:
        return st.builds(
            OpEnvelope,
            terminal=st.just(terminal),
            seq=seq,
            op_id=op_ids,
            version=st.integers(1, 3),
            recorded_at=st.just(NOW),
            op=ops,
        )

    def on_route(env: OpEnvelope, route: str, user: str, headers: dict[str, Any]) -> Message:
        return Message(encode(env), route, user, f"{env.op_id}/{env.version}", headers)

    def elsewhere(env: OpEnvelope, other: str, user: str, headers: dict[str, Any]) -> Message:
        """On another terminal's route, or on the till's route under another topic."""
        topic = topic_of(env.op)
        if other == till:
            topic = next(t for t in TOPICS if t != topic)
        return on_route(env, world.route(other, topic), user, headers)

    any_route = st.sampled_from(
        [world.route(till), world.route(world.neighbour), world.route(world.rogue, "pagos")]
    )
    users = st.sampled_from(["guest", "none", "rogue"])
    random_bytes = st.builds(Message, st.binary(max_size=300), any_route, users, message_ids)
    claimed_seq = st.builds(
        lambda m, seq, h: dataclasses.replace(m, headers={**h, "terminal": till, "seq": seq}),
        random_bytes,
        st.integers(1, 10),
        garbage_headers,
    )
    wrong_route = st.builds(
        elsewhere,
        envelopes(till, seqs),
        st.sampled_from([world.neighbour, world.rogue, till]),
        users,
        garbage_headers,
    )
    no_user = st.builds(
        lambda env, h: on_route(env, world.route(till, topic_of(env.op)), "none", h),
        envelopes(till, seqs),
        garbage_headers,
    )
    wrong_user = st.builds(
        lambda env, h: on_route(env, world.route(till, topic_of(env.op)), "rogue", h),
        envelopes(till, seqs),
        garbage_headers,
    )
    beyond_the_store = st.builds(
        lambda seq, version, big_seq, h: on_route(
            envelope(till, seq if big_seq else 1, version=1 if big_seq else version),
            world.route(till),
            "guest",
            h,
        ),
        BIG,
        BIG,
        st.booleans(),
        garbage_headers,
    )
    neighbours_invalid = st.builds(
        lambda seq, h: on_route(
            envelope(world.neighbour, seq, BAD_TOTALS),
            world.route(world.neighbour),
            "guest",
            h,
        ),
        st.integers(1, 2**31 - 1),
        garbage_headers,
    )
    return st.one_of(
        random_bytes,
        claimed_seq,
        wrong_route,
        no_user,
        wrong_user,
        beyond_the_store,
        neighbours_invalid,
    )


def real_message(env: OpEnvelope) -> Message:
    topic = topic_of(env.op)
    headers = {"terminal": env.terminal, "seq": env.seq, "topic": topic}
    route = topology.op_routing_key(env.terminal, topic)
    return Message(encode(env), route, "guest", f"{env.op_id}/{env.version}", headers)


@pytest.fixture
def neighbour(clean_broker: str, channel: Any, new_terminal_id: Callable[[], str]) -> str:
    neighbour = new_terminal_id()
    topology.declare_terminal(channel, neighbour, "L1", "PV1", "retail")
    return neighbour


@pytest.fixture
def rogue(broker_url: str) -> Iterator[tuple[str, Any]]:
    """A broker user of its own, and a channel connected as it."""
    name = f"R{uuid.uuid4().hex[:8].upper()}"
    with broker_user(broker_url, name) as url, channel_as(url) as channel:
        yield name, channel


@pytest.fixture
def server(engine: sa.Engine, settings: Settings, clean_broker: str) -> Iterator[RunningServer]:
    with running_server(engine, settings) as server:
        yield server
        server.finish()


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_bad_messages_go_dead_and_never_touch_a_real_terminals_operations(
    data: st.DataObject,
    engine: sa.Engine,
    server: RunningServer,
    channel: Any,
    neighbour: str,
    rogue: tuple[str, Any],
    new_terminal_id: Callable[[], str],
) -> None:
    rogue_user, rogue_channel = rogue
    till = new_terminal_id()
    topology.declare_terminal(channel, till, "L1", "PV1", "retail")
    reals = [envelope(till, seq) for seq in range(1, data.draw(st.integers(1, 5)) + 1)]
    world = World(till, neighbour, rogue_user, reals)
    bad = data.draw(st.lists(rogues(world), min_size=1, max_size=6), label="bad messages")
    copies = data.draw(st.lists(st.sampled_from(reals), max_size=2), label="redelivered")
    messages = [
        *(
            dataclasses.replace(m, headers={**m.headers, MARK: f"bad-{i}"})
            for i, m in enumerate(bad)
        ),
        *(real_message(env) for env in reals + copies),
    ]
    order = data.draw(st.permutations(messages), label="publish order")
    before = server.latest.received

    for message in order:
        publish_as(message, channel, rogue_channel, rogue_user)
    wait_for(
        lambda: server.latest.received >= before + len(messages), "every message answered", server
    )

    dead = take_dead(channel)
    assert sorted(str(headers.get(MARK)) for _, headers in dead) == sorted(
        f"bad-{i}" for i in range(len(bad))
    )
    assert all(reason_of(headers) for _, headers in dead)
    keys = {(env.op_id, env.version) for env in reals}
    acked: set[tuple[uuid.UUID | None, int | None]] = set()

    def receipted() -> bool:
        for item in take_receipt_items(channel, till):
            assert item.status == "acked" or (item.op_id, item.version) not in keys, item
            acked.add((item.op_id, item.version))
        return keys <= acked

    wait_for(receipted, "an ack for every real operation")
    assert {op_id: held[:2] for op_id, held in held_ops(engine, till).items()} == {
        str(env.op_id): (1, env.seq) for env in reals
    }
    assert tracking_rows(engine, till) == [(env.seq, str(env.op_id), 1, "applied") for env in reals]
    assert server.running()


def publish_as(message: Message, guest: Any, rogue_channel: Any, rogue_user: str) -> None:
    user_id = {"guest": "guest", "none": None, "rogue": rogue_user}[message.user]
    publish(
        rogue_channel if message.user == "rogue" else guest,
        message.body,
        message.routing_key,
        user_id=user_id,
        message_id=message.message_id,
        headers=message.headers,
    )
