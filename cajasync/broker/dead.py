"""Dead letters (`cajasync.dead`): read them without losing them, replay them, purge them.

A quorum queue cannot be browsed. Reading takes the queue's messages on one channel with
manual acks and no prefetch limit, up to the count the queue had when the read began, and
closes the channel: every message not acked goes back to the queue (RabbitMQ returns a
closed channel's unacked messages), so a listing loses nothing and a kill -9 mid-way loses
nothing either. A replay or a purge acks only the messages it selected. While a read is
under way the queue looks empty to another reader; two operators listing at once each see
part of it.

Each dead letter gets a stable id: its `message_id` when it has one (an operation's is
`<op_id>/<version>`), else the first 16 hex digits of the sha256 of its body and headers.
Where it came from, why and when are read from our headers (`x-cajasync-queue`,
`x-cajasync-reason`, `x-cajasync-dead-at`, set by `Outbound.dead_letter`), else from
RabbitMQ's own `x-death` (a delivery limit reached), else from the routing key.

A replay republishes the message to the queue it came from: a server queue's through
`cajasync.up` with its routing key (server ingest checks it against the envelope), any
other straight through the default exchange; with its properties (`user_id`
included: RabbitMQ accepts it only from that user or one tagged `impersonator`), mandatory
and confirmed, so it lands in the queue it came from; only then is the dead letter acked.
A kill -9 between the two leaves a duplicate, never a loss, and the server deduplicates
operations by `(op_id, version)`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import pika
import pika.exceptions

from cajasync.broker.ports import (
    DEAD_AT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    USER_HEADER,
)
from cajasync.broker.rabbitmq import blocking_channel, broker_errors
from cajasync.core import topology
from cajasync.core.settings import Settings
from cajasync.errors import BrokerUnavailable, CajasyncError, InvalidMessage
from schemas.codec import decode_op, decode_request, to_builtins

DEATH_REASONS: Final = {
    "delivery_limit": "delivery limit reached",
    "rejected": "rejected by a consumer",
    "expired": "expired",
    "maxlen": "queue length limit reached",
}
# Headers that say how a message died: dropped when it is replayed.
DEATH_HEADERS: Final = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
        REASON_HEADER,
        ROUTING_KEY_HEADER,
        QUEUE_HEADER,
        USER_HEADER,
        DEAD_AT_HEADER,
    }
)
READ_TIMEOUT_S: Final = 2.0  # a read ends when the queue hands out nothing for this long


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead letter as an operator sees it."""

    id: str
    queue: str | None
    reason: str
    terminal: str | None
    routing_key: str
    dead_at: dt.datetime | None
    size: int
    message_id: str | None = None
    user_id: str | None = None
    headers: dict[str, Any] = {}
    body: Any = None  # the decoded operation or request, when asked for and it decodes


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; every given filter must match."""

    ids: frozenset[str] = frozenset()
    reason: str | None = None  # a case-insensitive substring of the reason
    terminal: str | None = None
    queue: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.ids or letter.id in self.ids)
            and (self.reason is None or self.reason.lower() in letter.reason.lower())
            and (self.terminal is None or letter.terminal == self.terminal)
            and (self.queue is None or letter.queue == self.queue)
        )

    @property
    def narrows(self) -> bool:
        """Whether the selection names something (replay and purge refuse to act on all
        dead letters unless told so)."""
        return bool(self.ids) or any(
            v is not None for v in (self.reason, self.terminal, self.queue)
        )


@dataclass(frozen=True)
class _Held:
    tag: int
    properties: Any
    body: bytes
    routing_key: str
    letter: DeadLetter


Progress = Callable[[int, int], None]  # (done, total)


def list_dead(
    settings: Settings,
    selection: Selection = Selection(),
    *,
    limit: int | None = None,
    decoded: bool = False,
) -> list[DeadLetter]:
    """The dead letters `selection` matches, oldest first, at most `limit`; each with its
    decoded body when `decoded`. Nothing leaves the queue."""
    found: list[DeadLetter] = []
    with _reading(settings, "listing dead letters") as (_channel, held):
        for item in held:
            if selection.matches(item.letter):
                letter = item.letter
                if decoded:
                    letter = msgspec.structs.replace(letter, body=decode_body(item.body))
                found.append(letter)
                if limit is not None and len(found) >= limit:
                    break
    return found


def replay_dead(
    settings: Settings, selection: Selection, *, progress: Progress | None = None
) -> list[DeadLetter]:
    """Republish each selected dead letter to the queue it came from, then ack it; the
    replayed ones. A dead letter whose queue is unknown is left where it is."""
    return _settle(settings, selection, "replaying dead letters", _republish, progress)


def purge_dead(
    settings: Settings, selection: Selection, *, progress: Progress | None = None
) -> list[DeadLetter]:
    """Delete each selected dead letter; the deleted ones."""
    return _settle(settings, selection, "purging dead letters", None, progress)


def _settle(
    settings: Settings,
    selection: Selection,
    doing: str,
    send: Callable[[Any, _Held], None] | None,
    progress: Progress | None,
) -> list[DeadLetter]:
    done: list[DeadLetter] = []
    with (
        _reading(settings, doing) as (channel, held),
        broker_errors(settings.broker_url, doing),
    ):
        selected = [item for item in held if selection.matches(item.letter)]
        publisher = None
        if send is not None and selected:
            publisher = channel.connection.channel()
            publisher.confirm_delivery()
        for item in selected:
            if publisher is not None and send is not None:
                if item.letter.queue is None:
                    continue
                send(publisher, item)
            channel.basic_ack(item.tag)
            done.append(item.letter)
            if progress is not None:
                progress(len(done), len(selected))
    return done


def _republish(channel: Any, item: _Held) -> None:
    letter = item.letter
    exchange, routing_key = _destination(letter)
    original = item.properties
    headers = {k: v for k, v in (original.headers or {}).items() if k not in DEATH_HEADERS}
    properties = pika.BasicProperties(
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        headers=headers,
        delivery_mode=original.delivery_mode or 2,
        priority=original.priority,
        correlation_id=original.correlation_id,
        reply_to=original.reply_to,
        message_id=original.message_id,
        timestamp=original.timestamp,
        type=original.type,
        user_id=letter.user_id,
        app_id=original.app_id,
    )
    try:
        channel.basic_publish(exchange, routing_key, item.body, properties, mandatory=True)
    except pika.exceptions.UnroutableError as exc:
        raise CajasyncError(
            f"dead letter {letter.id}: nothing is bound to {routing_key} on "
            f"{exchange or 'the default exchange'} (run `cajasync server init`); "
            f"it stays in {topology.DEAD_QUEUE}"
        ) from exc
    except pika.exceptions.ChannelClosedByBroker as exc:
        hint = (
            f"; replay as broker user {letter.user_id!r} or one tagged impersonator"
            if exc.reply_code == 406 and letter.user_id
            else ""
        )
        raise CajasyncError(
            f"dead letter {letter.id}: RabbitMQ refused the replay ({exc.reply_text}){hint}; "
            f"it stays in {topology.DEAD_QUEUE}"
        ) from exc


@contextmanager
def _reading(settings: Settings, doing: str) -> Iterator[tuple[Any, Iterator[_Held]]]:
    """A channel holding `cajasync.dead`'s messages (as many as it had when the read
    began) and an iterator over them; closing it gives back every message not acked."""
    with blocking_channel(settings.broker_url, doing=doing) as channel:
        try:
            count = channel.queue_declare(topology.DEAD_QUEUE, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                raise BrokerUnavailable(
                    f"no {topology.DEAD_QUEUE} queue on this broker: run `cajasync server init`"
                ) from exc
            raise
        channel.basic_qos(prefetch_count=0)
        yield channel, _held(channel, count)


def _held(channel: Any, count: int) -> Iterator[_Held]:
    if count == 0:
        return
    messages = channel.consume(topology.DEAD_QUEUE, inactivity_timeout=READ_TIMEOUT_S)
    for taken, (method, properties, body) in enumerate(messages, start=1):
        if method is None:
            break
        letter = dead_letter(properties, body or b"", method.routing_key)
        yield _Held(method.delivery_tag, properties, body or b"", method.routing_key, letter)
        if taken >= count:
            break


# -- what a dead letter says about itself ----------------------------------------------------


def dead_letter(properties: Any, body: bytes, routing_key: str) -> DeadLetter:
    """A dead letter's description from its AMQP properties and body."""
    headers = properties.headers if isinstance(properties.headers, dict) else {}
    death = _first_death(headers)
    key = _text(headers.get(ROUTING_KEY_HEADER)) or _death_routing_key(death) or routing_key
    queue = _text(headers.get(QUEUE_HEADER)) or _text(death.get("queue"))
    queue = queue or _text(headers.get("x-first-death-queue")) or _queue_of(key)
    user = properties.user_id or _text(headers.get(USER_HEADER)) or None
    return DeadLetter(
        id=letter_id(properties.message_id, body, headers),
        queue=queue,
        reason=_reason(headers, death),
        terminal=_terminal(key, user, body),
        routing_key=key,
        dead_at=_dead_at(headers, death),
        size=len(body),
        message_id=properties.message_id,
        user_id=user,
        headers=_plain(headers),
    )


def letter_id(message_id: str | None, body: bytes, headers: dict[str, Any]) -> str:
    """`message_id` when set, else a hash of the body and the headers that do not change
    when the message is listed (never `x-delivery-count`)."""
    if message_id:
        return message_id
    digest = hashlib.sha256(body)
    stable = {k: v for k, v in headers.items() if k != "x-delivery-count"}
    digest.update(repr(sorted((k, repr(v)) for k, v in stable.items())).encode())
    return digest.hexdigest()[:16]


def decode_body(body: bytes) -> Any:
    """The body as plain data: an operation envelope or a request; None when neither."""
    for decode in (decode_op, decode_request):
        try:
            return to_builtins(decode(body))
        except InvalidMessage:
            continue
    return None


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def _death_routing_key(death: dict[str, Any]) -> str | None:
    keys = death.get("routing-keys")
    return _text(keys[0]) if isinstance(keys, list) and keys else None


def _reason(headers: dict[str, Any], death: dict[str, Any]) -> str:
    ours = _text(headers.get(REASON_HEADER))
    if ours:
        return ours
    theirs = _text(death.get("reason")) or _text(headers.get("x-first-death-reason"))
    if theirs:
        return DEATH_REASONS.get(theirs, theirs)
    return "unknown (no reason header)"


def _terminal(routing_key: str, user: str | None, body: bytes) -> str | None:
    """The terminal its routing key names (`op.<terminal>.<topic>`, `req.<terminal>.<kind>`,
    `t.<terminal>`), else its broker user when not a shared one, else its envelope's."""
    parts = routing_key.split(".")
    if len(parts) >= 2 and parts[0] in ("op", "req", "t"):
        return parts[1]
    if user and user != "guest":
        return user
    try:
        return decode_op(body).terminal
    except InvalidMessage:
        return None


def _queue_of(routing_key: str) -> str | None:
    """The queue a routing key reaches by the topology, for dead letters without headers."""
    kind, _, rest = routing_key.partition(".")
    if kind == "op":
        return topology.OPS_QUEUE
    if kind == "req":
        return topology.REQUESTS_QUEUE
    if kind == "t" and rest:
        return topology.terminal_queue(rest)
    return None


def _destination(letter: DeadLetter) -> tuple[str, str]:
    """Where a replay publishes (exchange, routing key). The server's queues are fed by
    `cajasync.up` and their consumers check the routing key against the message, so the
    original routing key goes back through that exchange (its bindings lead only to the
    queue it came from). Any other queue (a till's, whose change events a topic key would
    fan out to every till of the scope) gets it straight, through the default exchange."""
    assert letter.queue is not None
    if letter.queue in (topology.OPS_QUEUE, topology.REQUESTS_QUEUE):
        return topology.UP_EXCHANGE, letter.routing_key
    return "", letter.queue


def _dead_at(headers: dict[str, Any], death: dict[str, Any]) -> dt.datetime | None:
    ours = _text(headers.get(DEAD_AT_HEADER))
    if ours:
        try:
            return dt.datetime.fromisoformat(ours)
        except ValueError:
            return None
    when = death.get("time")
    if isinstance(when, dt.datetime):
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    if isinstance(when, int | float):
        return dt.datetime.fromtimestamp(when, dt.UTC)
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) and value else None


def _plain(value: Any) -> Any:
    """Headers as JSON-able data (bytes as text, times as ISO strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):  # pika's own `long` too
        return int(value)
    if isinstance(value, str | float):
        return value
    return repr(value)
