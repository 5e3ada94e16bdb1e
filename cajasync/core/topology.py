"""The broker topology of DESIGN.md, declared idempotently."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from schemas.topics import DOWN_TOPIC_SCOPES, TABLE_KINDS, TABLE_TOPICS

UP_EXCHANGE: Final = "cajasync.up"
DOWN_EXCHANGE: Final = "cajasync.down"
DEAD_EXCHANGE: Final = "cajasync.dlx"
OPS_QUEUE: Final = "cajasync.ops"
REQUESTS_QUEUE: Final = "cajasync.requests"
DEAD_QUEUE: Final = "cajasync.dead"
DELIVERY_LIMIT: Final = 5
STORE_EXCHANGE: Final = "cajasync.store"  # its alternate-exchange argument names the store

SHARED_USERS: Final = frozenset({"guest"})
"""Broker users shared by several terminals: their `user_id` says nothing about the sender."""

QUORUM: Final[dict[str, Any]] = {"x-queue-type": "quorum"}

# Change events of the shared scopes go to one stream per scope (`cajasync.s.all`,
# `cajasync.s.loc.<location>`), which every till of the scope reads from its own offset:
# one copy of a change whatever the number of tills (docs/design-scale.md, "Fan-out").
# Scopes of one pos or one till stay on the till's own queue.
STREAM_PREFIX: Final = "cajasync.s."
STREAM_SCOPES: Final = ("all", "loc")
STREAM_MAX_AGE: Final = "14D"  # a till off longer finds its offset gone and catches up
STREAM: Final[dict[str, Any]] = {
    "x-queue-type": "stream",
    "x-max-age": STREAM_MAX_AGE,
    "x-stream-max-segment-size-bytes": 50_000_000,
}


def op_routing_key(terminal: str, topic: str) -> str:
    return f"op.{terminal}.{topic}"


def request_routing_key(terminal: str, kind: str) -> str:
    """`req.<terminal>.<kind>`: a terminal's request (snapshot, catch-up, images...) up."""
    return f"req.{terminal}.{kind}"


def terminal_routing_key(terminal: str) -> str:
    return f"t.{terminal}"


def change_routing_key(topic: str, scope: str) -> str:
    """`chg.<topic>.<scope>`: what terminals of that scope are bound to."""
    return f"chg.{topic}.{scope}"


def heads_routing_key(scope: str) -> str | None:
    """A change routing key every terminal of `scope` is bound to: that of the scope's first
    topic that every kind of terminal takes (tables reach only restaurants and hotels).
    None for a scope no terminal is bound to."""
    kind = scope.partition(".")[0]
    for topic, natural in DOWN_TOPIC_SCOPES.items():
        if topic not in TABLE_TOPICS and kind in (natural, "term"):
            return change_routing_key(topic, scope)
    return None


TERMINAL_QUEUE_PREFIX = "cajasync.t."


def terminal_queue(terminal: str) -> str:
    return f"{TERMINAL_QUEUE_PREFIX}{terminal}"


StreamStart = int | dt.datetime | str
"""`x-stream-offset` of a stream consumer: an offset, a moment (the first chunk stamped at
or after it) or `next` (what is published from now on)."""


def scope_stream(scope: str) -> str:
    """The stream holding the change events of a shared scope (`all`, `loc.<location>`)."""
    return f"{STREAM_PREFIX}{scope}"


def terminal_streams(location: str) -> list[str]:
    """The streams a till of `location` reads: the chain's and its location's."""
    return [scope_stream("all"), scope_stream(f"loc.{location}")]


def change_bindings(terminal: str, location: str, pos: str, kind: str) -> list[str]:
    """Change-event routing keys a terminal's queue is bound to, by its scopes and kind:
    those of its point of sale and of itself (the shared scopes come by stream)."""
    keys = []
    for topic, scope in DOWN_TOPIC_SCOPES.items():
        if topic in TABLE_TOPICS and kind not in TABLE_KINDS:
            continue  # tables and rooms only reach restaurants and hotels
        if scope == "pos":
            keys.append(change_routing_key(topic, f"pos.{pos}"))
        keys.append(change_routing_key(topic, f"term.{terminal}"))
    return keys


def declare_stream(channel: Any, scope: str) -> str:
    """Declare a shared scope's stream, bound to every change key of that scope."""
    stream = scope_stream(scope)
    channel.queue_declare(stream, durable=True, arguments=STREAM)
    channel.queue_bind(stream, DOWN_EXCHANGE, routing_key=change_routing_key("*", scope))
    return stream


def declare_server(channel: Any) -> list[str]:
    """Declare exchanges and server queues; return what was declared, for display."""
    channel.exchange_declare(UP_EXCHANGE, "topic", durable=True)
    channel.exchange_declare(DOWN_EXCHANGE, "topic", durable=True)
    channel.exchange_declare(DEAD_EXCHANGE, "fanout", durable=True)
    channel.queue_declare(DEAD_QUEUE, durable=True, arguments=QUORUM)
    channel.queue_bind(DEAD_QUEUE, DEAD_EXCHANGE)
    channel.queue_declare(
        OPS_QUEUE,
        durable=True,
        arguments={
            **QUORUM,
            "x-dead-letter-exchange": DEAD_EXCHANGE,
            "x-delivery-limit": DELIVERY_LIMIT,
        },
    )
    channel.queue_bind(OPS_QUEUE, UP_EXCHANGE, routing_key="op.#")
    channel.queue_declare(REQUESTS_QUEUE, durable=True, arguments=QUORUM)
    channel.queue_bind(REQUESTS_QUEUE, UP_EXCHANGE, routing_key="req.#")
    everyone = declare_stream(channel, "all")
    return [
        UP_EXCHANGE,
        DOWN_EXCHANGE,
        DEAD_EXCHANGE,
        OPS_QUEUE,
        REQUESTS_QUEUE,
        DEAD_QUEUE,
        everyone,
    ]


def declare_own_queue(channel: Any, terminal: str) -> str:
    """What a till under its own broker user declares: its queue alone. It may not bind it
    (cajasync/broker/management.py): the server binds it by the registry."""
    queue = terminal_queue(terminal)
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    return queue


def stale_bindings(
    terminal: str, bound: list[str], location: str, pos: str, kind: str
) -> list[str]:
    """Change routing keys among `bound` that a terminal of this location, pos and kind must
    no longer receive (left by an earlier location, pos or kind)."""
    keep = set(change_bindings(terminal, location, pos, kind))
    return [key for key in bound if key.startswith("chg.") and key not in keep]


def shared_scope_keys(location: str) -> list[str]:
    """The keys of the shared scopes a till's queue was bound to before the streams (every
    topic of scope `all` and of its location): what migrating its fan-out unbinds."""
    names = {"all": "all", "loc": f"loc.{location}"}
    return [
        change_routing_key(topic, names[scope])
        for topic, scope in DOWN_TOPIC_SCOPES.items()
        if scope in names
    ]


def rebind_terminal(
    channel: Any,
    terminal: str,
    was: tuple[str, str, str] | None,
    location: str,
    pos: str,
    kind: str,
) -> str:
    """Declare the terminal's queue and bindings for where it is now and unbind those it had
    for where it `was` (location, pos, kind), so nothing stale keeps arriving."""
    queue = declare_terminal(channel, terminal, location, pos, kind)
    bound = shared_scope_keys(location)  # from before the streams: unbinding is idempotent
    if was is not None:
        bound += change_bindings(terminal, *was) + shared_scope_keys(was[0])
    for key in dict.fromkeys(stale_bindings(terminal, bound, location, pos, kind)):
        channel.queue_unbind(queue, DOWN_EXCHANGE, routing_key=key)
    return queue


def declare_terminal(channel: Any, terminal: str, location: str, pos: str, kind: str) -> str:
    """Declare the exchanges a terminal needs, the streams of its shared scopes and its own
    inbox queue with its bindings."""
    channel.exchange_declare(UP_EXCHANGE, "topic", durable=True)
    channel.exchange_declare(DOWN_EXCHANGE, "topic", durable=True)
    declare_stream(channel, "all")
    declare_stream(channel, f"loc.{location}")
    queue = terminal_queue(terminal)
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    channel.queue_bind(queue, DOWN_EXCHANGE, routing_key=terminal_routing_key(terminal))
    for key in change_bindings(terminal, location, pos, kind):
        channel.queue_bind(queue, DOWN_EXCHANGE, routing_key=key)
    return queue
