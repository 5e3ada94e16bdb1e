"""From a broker delivery to an Incoming: decode, validate, check who sent it and where.

Pure functions over a `Delivery` (what server ingest keeps of a pika message), so the rules
for routing keys, `user_id` and rejection details are tested without a broker.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from cajasync.errors import InvalidMessage
from inbox.store.base import TERMINAL_ID, Accepted, Incoming, Rejection, storage_problem
from schemas.codec import decode_op
from schemas.envelope import OpEnvelope
from schemas.ops import topic_of
from schemas.validation import validate

SHARED_USERS: Final = frozenset({"guest"})
"""Broker users shared by several terminals: their `user_id` says nothing about the sender."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message taken from `cajasync.ops`."""

    delivery_tag: int
    routing_key: str
    body: bytes
    message_id: str | None = None
    user_id: str | None = None
    content_type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)


def classify(delivery: Delivery) -> Incoming:
    """Accept a message that decodes, validates and came by the right route; else reject it."""
    envelope: OpEnvelope | None = None
    try:
        envelope = decode_op(delivery.body)
        validate(envelope)
        _check_storable(envelope)
        _check_route(delivery, envelope)
    except InvalidMessage as exc:
        return rejection(delivery, envelope, exc.reason)
    return Accepted(envelope)


def rejection(delivery: Delivery, envelope: OpEnvelope | None, reason: str) -> Rejection:
    """Everything known about a rejected message's origin, trusting the broker's checks first."""
    terminal = sender(delivery)
    op_id, version = _identity(delivery, envelope)
    return Rejection(
        terminal=terminal,
        seq=_seq(delivery, envelope, terminal),
        op_id=op_id,
        version=version,
        topic=_route(delivery.routing_key)[1] or str(delivery.headers.get("topic", "")),
        reason=reason,
    )


def sender(delivery: Delivery) -> str | None:
    """The terminal that sent a message: its own broker user, else its routing key or headers."""
    user = delivery.user_id
    candidates = [
        user if user and user not in SHARED_USERS else None,
        _route(delivery.routing_key)[0],
        delivery.headers.get("terminal"),
    ]
    for candidate in candidates:
        if isinstance(candidate, str) and TERMINAL_ID.match(candidate):
            return candidate
    return None


def _check_storable(envelope: OpEnvelope) -> None:
    problem = storage_problem(envelope)
    if problem is not None:
        raise InvalidMessage(f"terminal {envelope.terminal} seq {envelope.seq}: {problem}")


def _check_route(delivery: Delivery, envelope: OpEnvelope) -> None:
    terminal, topic = _route(delivery.routing_key)
    expected = f"op.{envelope.terminal}.{topic_of(envelope.op)}"
    if (terminal, topic) != (envelope.terminal, topic_of(envelope.op)):
        raise InvalidMessage(
            f"routing key {delivery.routing_key!r} does not match the operation ({expected!r})"
        )
    user = delivery.user_id
    if user and user not in SHARED_USERS and user != envelope.terminal:
        raise InvalidMessage(
            f"broker user {user!r} published an operation of terminal {envelope.terminal}"
        )


def _route(routing_key: str) -> tuple[str | None, str | None]:
    """(terminal, topic) of `op.<terminal>.<topic>`, or Nones when it has another shape."""
    parts = routing_key.split(".")
    if len(parts) != 3 or parts[0] != "op":
        return None, None
    return parts[1], parts[2]


def _identity(delivery: Delivery, envelope: OpEnvelope | None) -> tuple[str | None, int | None]:
    if envelope is not None:
        return str(envelope.op_id), envelope.version
    op_id, _, version = (delivery.message_id or "").partition("/")
    try:
        return str(uuid.UUID(op_id)), int(version)
    except ValueError:
        return None, None


def _seq(delivery: Delivery, envelope: OpEnvelope | None, terminal: str | None) -> int | None:
    if envelope is not None and envelope.terminal == terminal:
        return envelope.seq
    seq = delivery.headers.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        return seq
    return None
