"""From a broker delivery to an Incoming: decode, check who sent it and where, validate.

Pure functions over a `Delivery` (what server ingest keeps of a broker message), so the rules
for routing keys, `user_id` and rejection details are tested without a broker.

Only an operation of its own terminal occupies that terminal's seq: it decoded, its routing
key names the terminal and topic of its envelope, and its `user_id` is that terminal's own
broker user or a shared one (`SHARED_USERS`: then the broker cannot tell terminals apart and
the routing key is all there is). Such an operation is `Accepted`, or `Invalid` when it fails
validation or does not fit the store: it is the terminal's real operation, so it is recorded
as rejected under its own `(op_id, version)` and its seq counts as held (otherwise contiguity
would stall at it and every replay the server asks for would be rejected again). Only a seq
or version beyond the store's columns cannot be held at all: that one is rejected unrecorded
and answered to its terminal.

A body that does not decode is `Unreadable` when the broker authenticated its sender (a
non-shared user equal to the routing key's terminal, on a known topic) and the message
names its operation as the relay always does (message_id `<op_id>/<version>`, an integer
`seq` header): that terminal's own row, so it is recorded as rejected under that
`(op_id, version)` holding that seq, like an `Invalid` one, and the till learns why.

Anything else is a `Rejection`, recorded nowhere: a body that does not decode under a shared
broker user (it proves nothing: under guest anyone could have sent it; its seq stays a gap,
asked for with backoff), an envelope under another terminal's or topic's routing key, a
broker user that is not the terminal, and a message without `user_id`. Every operation
message must carry `user_id` (the relay always sets it); there is no exception, whoever the
broker user is. A rejection is answered only to a sender the broker authenticated. No
header is trusted for a terminal, nor for a seq unless the broker authenticated its sender.
"""

from __future__ import annotations

import uuid

from cajasync.broker.ports import Delivery
from cajasync.core.topology import SHARED_USERS
from cajasync.errors import InvalidMessage
from inbox.server_store.base import (
    MAX_INT,
    TERMINAL_ID,
    Accepted,
    Incoming,
    Invalid,
    Rejection,
    Unreadable,
    digest_of,
    storage_problem,
)
from inbox.server_store.rules import admit
from schemas.codec import decode_op
from schemas.envelope import OpEnvelope
from schemas.ops import topic_of
from schemas.topics import UP_TOPICS
from schemas.validation import validate


def classify(delivery: Delivery) -> Incoming:
    """Sort a delivery: Accepted, Invalid (its own terminal's, failing validation),
    Unreadable (its own terminal's, not decoding) or Rejection."""
    try:
        envelope = decode_op(delivery.body)
    except InvalidMessage as exc:
        return unreadable(delivery, exc.reason) or rejection(delivery, None, exc.reason)
    try:
        check_sender(delivery, envelope)
    except InvalidMessage as exc:
        return rejection(delivery, envelope, exc.reason)
    digest = digest_of(delivery.body)
    try:
        validate(envelope)
        _check_storable(envelope)
    except InvalidMessage as exc:
        return admit(Invalid(envelope, exc.reason, digest))
    return Accepted(envelope, digest)


def rejection(delivery: Delivery, envelope: OpEnvelope | None, reason: str) -> Rejection:
    """A message from nowhere, answered only to a sender the broker authenticated."""
    op_id, version = _identity(delivery, envelope)
    return Rejection(
        terminal=authenticated_sender(delivery),
        seq=None,
        op_id=op_id,
        version=version,
        topic=_route(delivery.routing_key)[1] or "",
        reason=reason,
    )


def unreadable(delivery: Delivery, reason: str) -> Unreadable | None:
    """An undecodable row of the terminal the broker authenticated, named by the message as
    the relay names it (message_id `<op_id>/<version>`, an integer `seq` header), or None."""
    terminal = authenticated_sender(delivery)
    op_id, version = _identity(delivery, None)
    seq = delivery.headers.get("seq")
    topic = _route(delivery.routing_key)[1]
    if terminal is None or op_id is None or version is None or topic not in UP_TOPICS:
        return None
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_INT:
        return None
    return Unreadable(
        terminal=terminal,
        seq=seq,
        op_id=op_id,
        version=version,
        topic=str(topic),
        reason=reason,
        digest=digest_of(delivery.body),
    )


def authenticated_sender(delivery: Delivery) -> str | None:
    """The terminal whose own broker user published a message on its own routing key, if any."""
    user = delivery.user_id
    if user is None or user in SHARED_USERS or not TERMINAL_ID.match(user):
        return None
    return user if _route(delivery.routing_key)[0] == user else None


def check_sender(delivery: Delivery, envelope: OpEnvelope) -> None:
    """Raise InvalidMessage unless the operation came from its own terminal, by its own route."""
    terminal, topic = _route(delivery.routing_key)
    user = delivery.user_id
    if not user:
        raise InvalidMessage(
            f"no user_id: an operation of terminal {envelope.terminal} arrived on "
            f"{delivery.routing_key!r} without the broker user that published it "
            "(every cajasync relay sets it; publish with user_id)"
        )
    expected = f"op.{envelope.terminal}.{topic_of(envelope.op)}"
    if (terminal, topic) != (envelope.terminal, topic_of(envelope.op)):
        raise InvalidMessage(
            f"routing key {delivery.routing_key!r} does not match the operation ({expected!r})"
        )
    if user not in SHARED_USERS and user != envelope.terminal:
        raise InvalidMessage(
            f"broker user {user!r} published an operation of terminal {envelope.terminal}"
        )


def _check_storable(envelope: OpEnvelope) -> None:
    problem = storage_problem(envelope)
    if problem is not None:
        raise InvalidMessage(f"terminal {envelope.terminal} seq {envelope.seq}: {problem}")


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
        parsed = str(uuid.UUID(op_id)), int(version)
    except ValueError:
        return None, None
    return parsed if 1 <= parsed[1] <= MAX_INT else (None, None)
