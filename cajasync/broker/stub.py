"""An in-memory broker honouring `cajasync.broker.ports`, so the loops are tested without
RabbitMQ (the dramatiq model: `rabbitmq.py` beside `stub.py`).

    broker = StubBroker()
    declare_server(broker.channel())          # the same topology rules as on RabbitMQ
    Ingest(store, settings, broker=broker, until_idle=0.2).run()
    broker.messages("cajasync.t.T1")          # what reached a terminal's queue

What it honours, as RabbitMQ does for what cajasync declares:

* exchanges (`topic` with `*` and `#`, `fanout`, `direct`, and the default exchange),
  queues and bindings, declared through a channel-like API (`exchange_declare`,
  `queue_declare`, `queue_bind`), so `cajasync.core.topology`'s declare functions apply;
* publisher confirms: an ack, or a nack for a message routed to a queue in `refusing`
  (a full queue, a quorum queue without its majority); a `mandatory` publish that reaches
  no queue is returned (312 NO_ROUTE) before its ack;
* consumer acks, and nacks or rejects with or without requeue; a requeued message comes
  again first, flagged `redelivered`, with an `x-delivery-count` header counting its
  returns (as quorum queues do); one returned more than the queue's `x-delivery-limit` is
  dead-lettered (reason `delivery_limit`) to its `x-dead-letter-exchange`, as is one
  rejected without requeue (reason `rejected`); a queue without one drops it. Deliveries
  still unacked when their session ends go back the same way (counted: RabbitMQ 3.x
  quorum queues count them too);
* `available = False` (or `refuse_sessions(n)`: the next n) refuses new sessions and
  `drop_connections()` ends the open ones, with BrokerUnavailable, as a broker restart does.

Not modelled: message TTL (`expiration` is kept, never applied), queue length limits,
exclusive or auto-delete queues, transactions.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final

from cajasync.broker.asking import REPLY_TO, no_answer, refused
from cajasync.broker.ports import (
    CONTENT_TYPE,
    NO_ROUTE,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    USER_HEADER,
    Delivery,
    Event,
    LinkHandler,
    SessionHandler,
    request_kind,
    returned_reason,
)
from cajasync.broker.rabbitmq import username
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.topology import (
    DEAD_EXCHANGE,
    DOWN_EXCHANGE,
    UP_EXCHANGE,
    StreamStart,
    declare_terminal,
    request_routing_key,
    terminal_queue,
    terminal_routing_key,
)
from cajasync.errors import BrokerUnavailable
from schemas.codec import encode
from schemas.questions import Question
from schemas.unions import Request

DELIVERY_COUNT: Final = "x-delivery-count"
IDLE_WAIT_S: Final = 0.05  # longest wait of a session loop without looking at its timers


@dataclass(frozen=True)
class Message:
    """A message as the stub keeps it."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None = None
    user_id: str | None = None
    content_type: str | None = CONTENT_TYPE
    headers: dict[str, Any] = field(default_factory=dict)
    expiration: str | None = None
    redelivered: bool = False
    reply_to: str | None = None
    correlation_id: str | None = None

    def delivery(self, tag: int) -> Delivery:
        return Delivery(
            delivery_tag=tag,
            routing_key=self.routing_key,
            body=self.body,
            message_id=self.message_id,
            user_id=self.user_id,
            content_type=self.content_type,
            headers=dict(self.headers),
            reply_to=self.reply_to,
            correlation_id=self.correlation_id,
        )


@dataclass
class Queue:
    name: str
    arguments: dict[str, Any]
    ready: deque[Message] = field(default_factory=deque)  # a stream's: every message, kept

    @property
    def stream(self) -> bool:
        return self.arguments.get("x-queue-type") == "stream"


@dataclass(frozen=True)
class Confirm:
    """What the broker said to one publish."""

    ok: bool
    returned: bool = False


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


class StubChannel:
    """The declare side of a pika channel, enough for `cajasync.core.topology`."""

    def __init__(self, broker: StubBroker) -> None:
        self._broker = broker

    def exchange_declare(
        self, exchange: str, exchange_type: Any = "direct", callback: Any = None, **_: Any
    ) -> None:
        kind = getattr(exchange_type, "value", exchange_type)
        with self._broker.lock:
            self._broker.exchanges.setdefault(exchange, str(kind))
        _done(callback)

    def queue_declare(
        self, queue: str, arguments: dict[str, Any] | None = None, callback: Any = None, **_: Any
    ) -> None:
        with self._broker.lock:
            self._broker.queues.setdefault(queue, Queue(queue, dict(arguments or {})))
        _done(callback)

    def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str | None = None,
        callback: Any = None,
        **_: Any,
    ) -> None:
        binding = (exchange, queue, routing_key if routing_key is not None else queue)
        with self._broker.lock:
            if binding not in self._broker.bindings:
                self._broker.bindings.append(binding)
        _done(callback)

    def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str | None = None,
        callback: Any = None,
        **_: Any,
    ) -> None:
        binding = (exchange, queue, routing_key if routing_key is not None else queue)
        with self._broker.lock:
            if binding in self._broker.bindings:
                self._broker.bindings.remove(binding)
        _done(callback)


def _done(callback: Any) -> None:
    if callback is not None:
        callback(None)


class StubBroker:
    """Exchanges, queues and bindings in memory; thread-safe; one per test."""

    def __init__(self) -> None:
        self.lock = threading.Condition(threading.RLock())
        self.exchanges: dict[str, str] = {"": "direct"}
        self.queues: dict[str, Queue] = {}
        self.bindings: list[tuple[str, str, str]] = []  # (exchange, queue, binding key)
        self.refusing: set[str] = set()  # queues whose publishes are nacked
        self.available = True
        self.generation = 0  # bumped by drop_connections()
        self._refusals = 0  # sessions still to refuse (refuse_sessions)

    # -- declaring and looking -----------------------------------------------------------

    def channel(self) -> StubChannel:
        """A channel-like object to declare topology with."""
        return StubChannel(self)

    def messages(self, queue: str) -> list[Message]:
        """The messages ready in `queue` (not handed to a consumer), oldest first."""
        with self.lock:
            return list(self.queues[queue].ready)

    def get(self, queue: str) -> Message | None:
        """Take the oldest ready message of `queue` (acked at once), or None."""
        with self.lock:
            ready = self.queues[queue].ready
            return ready.popleft() if ready else None

    def refuse_sessions(self, count: int) -> None:
        """Refuse the next `count` sessions with BrokerUnavailable (a broker away a while)."""
        self._refusals = count

    def drop_connections(self) -> None:
        """End every open session with BrokerUnavailable, as a broker restart does."""
        with self.lock:
            self.generation += 1
            self.lock.notify_all()

    # -- publishing ----------------------------------------------------------------------

    def publish(self, message: Message, *, mandatory: bool = False) -> Confirm:
        """Route `message`; what a publisher in confirm mode would hear back."""
        with self.lock:
            if message.exchange not in self.exchanges:
                raise BrokerUnavailable(
                    f"the stub broker closed the channel: 404 NOT_FOUND - no exchange "
                    f"'{message.exchange}'"
                )
            targets = self._route(message.exchange, message.routing_key)
            for name in targets:
                self.queues[name].ready.append(message)
            if targets:
                self.lock.notify_all()
            ok = not (self.refusing & set(targets))
            return Confirm(ok=ok, returned=mandatory and not targets)

    def _route(self, exchange: str, routing_key: str) -> list[str]:
        if exchange == "":
            return [routing_key] if routing_key in self.queues else []
        kind = self.exchanges[exchange]
        targets: list[str] = []
        for bound_exchange, queue, key in self.bindings:
            if bound_exchange != exchange or queue in targets:
                continue
            if (
                kind == "fanout"
                or (kind == "topic" and topic_matches(key, routing_key))
                or (kind == "direct" and key == routing_key)
            ):
                targets.append(queue)
        return targets

    # -- returning and dead-lettering -----------------------------------------------------

    def give_back(self, queue: str, messages: list[Message], *, requeue: bool) -> None:
        """Messages a consumer returned (nack/reject, or its session ended), oldest first."""
        with self.lock:
            target = self.queues[queue]
            limit = target.arguments.get("x-delivery-limit")
            again: list[Message] = []
            for message in messages:
                if not requeue:
                    self._dead_letter(target, message, "rejected")
                    continue
                count = int(message.headers.get(DELIVERY_COUNT, 0)) + 1
                headers = {**message.headers, DELIVERY_COUNT: count}
                returned = replace(message, headers=headers, redelivered=True)
                if limit is not None and count > int(limit):
                    self._dead_letter(target, returned, "delivery_limit")
                else:
                    again.append(returned)
            target.ready.extendleft(reversed(again))
            self.lock.notify_all()

    def _dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return  # dropped, as RabbitMQ does without a dead-letter exchange
        death = {"queue": queue.name, "reason": reason, "exchange": message.exchange}
        headers = {
            **message.headers,
            "x-death": [{**death, "count": 1, "routing-keys": [message.routing_key]}],
            "x-first-death-queue": queue.name,
            "x-first-death-reason": reason,
            "x-first-death-exchange": message.exchange,
        }
        routing_key = queue.arguments.get("x-dead-letter-routing-key", message.routing_key)
        dead = replace(message, exchange=exchange, routing_key=routing_key, headers=headers)
        self.publish(dead)

    # -- sessions ------------------------------------------------------------------------

    def _open(self, doing: str) -> int:
        with self.lock:
            refused, self._refusals = self._refusals > 0, max(0, self._refusals - 1)
        if refused or not self.available:
            raise BrokerUnavailable(f"the stub broker is unavailable while {doing}")
        return self.generation

    @contextmanager
    def consuming(
        self,
        queue: str,
        *,
        prefetch: int,
        declare: Callable[[Any], object],
        connecting: str,
        stop: threading.Event | None,
    ) -> Iterator[StubConsumeSession]:
        """A blocking consume session (`cajasync.broker.ports.Broker`)."""
        generation = self._open(connecting)
        declare(self.channel())
        session = StubConsumeSession(self, queue, prefetch, stop, generation)
        try:
            yield session
        finally:
            session.consumer.give_back_all()

    def terminal_link(
        self,
        settings: Settings,
        identity: TerminalIdentity,
        handler: LinkHandler,
        *,
        prefetch: int | None,
    ) -> StubLink:
        """A terminal relay's session (`cajasync.broker.ports.TerminalSessions`)."""
        return StubLink(self, settings, identity, handler, prefetch=prefetch)

    def feed_link(self, settings: Settings, handler: SessionHandler) -> StubFeedLink:
        """A feed relay's session (`cajasync.broker.ports.FeedSessions`)."""
        return StubFeedLink(self, handler)

    @contextmanager
    def asking(self, settings: Settings, identity: TerminalIdentity) -> Iterator[StubAsking]:
        """A terminal's question channel (`cajasync.broker.ports.Askers`): a private
        reply-to queue, gone on exit as RabbitMQ's pseudo-queue is."""
        self._open("asking the server")
        address = f"{REPLY_TO}.{uuid.uuid4().hex}"
        with self.lock:
            self.queues[address] = Queue(address, {})
        try:
            yield StubAsking(self, settings, identity, address)
        finally:
            with self.lock:
                del self.queues[address]


class Consumer:
    """The deliveries of one queue to one session: tags, prefetch, acks."""

    def __init__(self, broker: StubBroker, queue: str, prefetch: int) -> None:
        self._broker = broker
        self._queue = queue
        self._prefetch = prefetch
        self._tags = itertools.count(1)
        self._unacked: dict[int, Message] = {}

    def take(self) -> Delivery | None:
        """The next ready message within the prefetch, or None."""
        with self._broker.lock:
            ready = self._broker.queues[self._queue].ready
            if not ready or (self._prefetch and len(self._unacked) >= self._prefetch):
                return None
            tag, message = next(self._tags), ready.popleft()
            self._unacked[tag] = message
            return message.delivery(tag)

    def settle(self, tag: int, *, multiple: bool, ack: bool, requeue: bool = False) -> None:
        tags = [t for t in self._unacked if t <= tag] if multiple else [tag]
        messages = [self._unacked.pop(t) for t in tags if t in self._unacked]
        if not ack:
            self._broker.give_back(self._queue, messages, requeue=requeue)

    def give_back_all(self) -> None:
        """The session ended: what it did not ack goes back to the queue."""
        messages, self._unacked = list(self._unacked.values()), {}
        if messages:
            self._broker.give_back(self._queue, messages, requeue=True)


class StreamReaders:
    """One session's readers of streams: each from its own offset (the message's index in
    the stream; a moment reads from the first, the stub keeps no time), nothing removed,
    one tag sequence and prefetch for all of them, as on one pika channel."""

    def __init__(self, broker: StubBroker, prefetch: int) -> None:
        self._broker = broker
        self._prefetch = prefetch
        self._next: dict[str, int] = {}
        self._tags = itertools.count(1)
        self._unacked: set[int] = set()
        self.reading = False

    def start(self, starts: dict[str, StreamStart]) -> None:
        """Read the streams that exist (a missing one is left, as pika's link leaves it)."""
        self.reading = True
        with self._broker.lock:
            for stream, start in starts.items():
                queue = self._broker.queues.get(stream)
                if queue is not None and queue.stream:
                    self._next[stream] = _stub_offset(start, len(queue.ready))

    def take(self) -> tuple[int, str, int, Message] | None:
        """(tag, stream, offset, message) of the next message within the prefetch."""
        with self._broker.lock:
            for stream, offset in self._next.items():
                if self._prefetch and len(self._unacked) >= self._prefetch:
                    return None
                kept = self._broker.queues[stream].ready
                if offset < len(kept):
                    tag = next(self._tags)
                    self._unacked.add(tag)
                    self._next[stream] = offset + 1
                    return tag, stream, offset, kept[offset]
        return None

    def settle(self, tag: int, *, multiple: bool) -> None:
        self._unacked -= {t for t in self._unacked if t <= tag} if multiple else {tag}


def _stub_offset(start: StreamStart, length: int) -> int:
    """An offset as the stub reads it: `next` is the stream's end; a moment its first
    message (the stub keeps no time: reading more than asked is what a stream's chunks do)."""
    if isinstance(start, int):
        return start
    return length if start == "next" else 0


# -- the blocking side -----------------------------------------------------------------


class StubOutbound:
    """`cajasync.broker.ports.Outbound` on the stub."""

    def __init__(self, session: StubConsumeSession) -> None:
        self._session = session

    def ack(self, last_tag: int) -> None:
        self._session.alive()
        self._session.consumer.settle(last_tag, multiple=True, ack=True)

    def nack(self, last_tag: int) -> None:
        self._session.alive()
        self._session.consumer.settle(last_tag, multiple=True, ack=False, requeue=True)

    def send_down(self, routing_key: str, body: bytes) -> None:
        self._session.alive()
        self._session.broker.publish(Message(DOWN_EXCHANGE, routing_key, body))

    def dead_letter(self, message: Delivery, reason: str) -> None:
        self._session.alive()
        headers = {
            **message.headers,
            REASON_HEADER: reason,
            ROUTING_KEY_HEADER: message.routing_key,
            QUEUE_HEADER: self._session.queue,
            USER_HEADER: message.user_id or "",
        }
        dead = Message(
            DEAD_EXCHANGE,
            message.routing_key,
            message.body,
            message_id=message.message_id,
            content_type=message.content_type,
            headers=headers,
        )
        confirm = self._session.broker.publish(dead, mandatory=True)
        if not confirm.ok or confirm.returned:
            raise BrokerUnavailable(f"the stub broker refused the dead letter of {message}")


class StubReplies:
    """`cajasync.broker.ports.Replies` on the stub: every publish confirmed at once."""

    def __init__(self, session: StubConsumeSession) -> None:
        self._session = session
        self._returned = False

    def send(self, terminal: str, body: bytes) -> bool:
        self._session.alive()
        if self._returned:
            return False
        reply = Message(DOWN_EXCHANGE, terminal_routing_key(terminal), body)
        confirm = self._session.broker.publish(reply, mandatory=True)
        if not confirm.ok:
            raise BrokerUnavailable("the broker refused (nacked) a reply; retrying the request")
        self._returned = confirm.returned
        return True

    def reply(self, address: str, correlation_id: str, body: bytes) -> None:
        self._session.alive()
        answer = Message("", address, body, correlation_id=correlation_id)
        if not self._session.broker.publish(answer).ok:
            raise BrokerUnavailable("the broker refused (nacked) a reply; retrying the request")

    def settle(self) -> bool:
        returned, self._returned = self._returned, False
        return not returned


class StubConsumeSession:
    """`cajasync.broker.ports.ConsumeSession` on the stub."""

    def __init__(
        self,
        broker: StubBroker,
        queue: str,
        prefetch: int,
        stop: threading.Event | None,
        generation: int,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.consumer = Consumer(broker, queue, prefetch)
        self.out = StubOutbound(self)
        self._stop = stop
        self._generation = generation
        self._cancelled = False

    def alive(self) -> None:
        """BrokerUnavailable once the broker dropped this session's connection."""
        if self.broker.generation != self._generation:
            raise BrokerUnavailable("the stub broker dropped the connection")

    def deliveries(self, *, timeout: float) -> Iterator[Delivery | None]:
        while not self._cancelled:
            self.alive()
            delivery = self.consumer.take()
            if delivery is None:
                with self.broker.lock:
                    self.broker.lock.wait(timeout)
                self.alive()
                delivery = self.consumer.take()
            yield delivery

    def cancel(self) -> None:
        self._cancelled = True

    def sleep(self, seconds: float) -> None:
        if self._stop is not None:
            self._stop.wait(seconds)
        else:
            time.sleep(seconds)

    def replies(self) -> StubReplies:
        return StubReplies(self)


# -- the asynchronous side -------------------------------------------------------------


class StubSession:
    """`cajasync.broker.ports.ConfirmSession` on the stub: its own loop of timers,
    confirms and deliveries, run by `run()` on the caller's thread (real clock)."""

    def __init__(
        self,
        broker: StubBroker,
        handler: SessionHandler,
        *,
        consume: str | None = None,
        prefetch: int | None = None,
    ) -> None:
        self.broker = broker
        self._handler = handler
        self._consumer = None if consume is None else Consumer(broker, consume, prefetch or 0)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._published = 0
        self._closing = False
        self._error: BaseException | None = None
        self._generation = -1
        self._ready = False  # deliveries start once the handler heard on_ready, as on pika

    def _declare(self, channel: StubChannel) -> None:
        """Declare what the session needs."""

    def run(self) -> None:
        self._generation = self.broker._open("connecting")
        self._declare(self.broker.channel())
        self.call_later(0, self._on_ready)
        while not self._closing:
            if self.broker.generation != self._generation:
                self.fail(BrokerUnavailable("the stub broker dropped the connection"))
                break
            self._deliver()
            self._run_due()
            self._wait()
        if self._consumer is not None:
            self._consumer.give_back_all()
        if self._error is not None:
            raise self._error

    def _on_ready(self) -> None:
        self._ready = True
        self._handler.on_ready()

    def close(self) -> None:
        self._closing = True
        with self.broker.lock:
            self.broker.lock.notify_all()

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.close()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        due = time.monotonic() + delay
        heapq.heappush(self._timers, (due, next(self._order), lambda: self._guard(callback)))

    # -- what the subclasses publish with ------------------------------------------------

    def _publish(
        self,
        message: Message,
        *,
        mandatory: bool = False,
        on_return: Callable[[], None] | None = None,
    ) -> None:
        """Publish and schedule its confirm, after its return (as RabbitMQ sends them)."""
        if self.broker.generation != self._generation:
            raise BrokerUnavailable("the stub broker dropped the connection")
        confirm = self.broker.publish(message, mandatory=mandatory)
        if confirm.returned and on_return is not None:
            self.call_later(0, on_return)
        self._published += 1
        tag = self._published
        self.call_later(0, lambda: self._handler.on_confirm(tag, multiple=False, ok=confirm.ok))

    def _settle(self, tag: int, *, multiple: bool, ack: bool) -> None:
        assert self._consumer is not None
        self._consumer.settle(tag, multiple=multiple, ack=ack)

    def _on_delivery(self, delivery: Delivery) -> None:
        """A message arrived on the consumed queue."""

    # -- the loop --------------------------------------------------------------------------

    def _deliver(self) -> None:
        while self._consumer is not None and self._ready and not self._closing:
            delivery = self._consumer.take()
            if delivery is None:
                return
            self._guard(lambda d=delivery: self._on_delivery(d))  # type: ignore[misc]

    def _run_due(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now and not self._closing:
            _due, _order, callback = heapq.heappop(self._timers)
            callback()

    def _wait(self) -> None:
        if self._closing:
            return
        wait = IDLE_WAIT_S
        if self._timers:
            wait = min(wait, max(0.0, self._timers[0][0] - time.monotonic()))
        if wait > 0:
            with self.broker.lock:
                self.broker.lock.wait(wait)

    def _guard(self, callback: Callable[[], None]) -> None:
        """Run a handler callback; an error ends the session, `run()` raises it."""
        if self._error is not None:
            return
        try:
            callback()
        except Exception as exc:
            self.fail(exc)


class StubLink(StubSession):
    """`cajasync.broker.ports.TerminalSession` on the stub."""

    def __init__(
        self,
        broker: StubBroker,
        settings: Settings,
        identity: TerminalIdentity,
        handler: LinkHandler,
        *,
        prefetch: int | None,
    ) -> None:
        consume = None if prefetch is None else terminal_queue(identity.terminal)
        super().__init__(broker, handler, consume=consume, prefetch=prefetch)
        self._link_handler = handler
        self._identity = identity
        self._user = username(settings.broker_url)
        self._streams = StreamReaders(broker, prefetch or 0)

    def _declare(self, channel: StubChannel) -> None:
        i = self._identity
        declare_terminal(channel, i.terminal, i.location, i.pos, i.kind)

    def publish(
        self, routing_key: str, body: bytes, *, message_id: str, headers: dict[str, Any]
    ) -> None:
        message = Message(
            UP_EXCHANGE, routing_key, body, message_id, self._user, headers=dict(headers)
        )
        reason = returned_reason(NO_ROUTE, "NO_ROUTE", UP_EXCHANGE, routing_key)
        seq = headers.get("seq")
        on_return = None
        if isinstance(seq, int):
            on_return = lambda: self._link_handler.on_return(seq, reason)  # noqa: E731
        self._publish(message, mandatory=True, on_return=on_return)

    def publish_request(self, request: Request) -> None:
        terminal, kind = self._identity.terminal, request_kind(request)
        headers = {"terminal": terminal, "request": kind}
        routing_key = request_routing_key(terminal, kind)
        message = Message(
            UP_EXCHANGE, routing_key, encode(request), None, self._user, headers=headers
        )
        self._publish(message, mandatory=True)

    def ack(self, tag: int, *, multiple: bool) -> None:
        if tag < 0:
            self._streams.settle(-tag, multiple=multiple)
        else:
            self._settle(tag, multiple=multiple, ack=True)

    def reject(self, tag: int) -> None:
        if tag < 0:
            self._streams.settle(-tag, multiple=False)
        else:
            self._settle(tag, multiple=False, ack=False)

    def _on_delivery(self, delivery: Delivery) -> None:
        self._link_handler.on_message(delivery.delivery_tag, delivery.routing_key, delivery.body)

    def _deliver(self) -> None:
        """The queue's deliveries, then the streams' (read from the handler's starts once
        the session is ready, as the pika link does)."""
        super()._deliver()
        if self._consumer is None or not self._ready or self._closing:
            return
        if not self._streams.reading:
            self._streams.start(self._link_handler.stream_starts())
        while not self._closing:
            taken = self._streams.take()
            if taken is None:
                return
            self._guard(lambda t=taken: self._on_stream_delivery(*t))  # type: ignore[misc]

    def _on_stream_delivery(self, tag: int, stream: str, offset: int, message: Message) -> None:
        self._link_handler.on_stream_message(
            -tag, stream, offset, message.routing_key, message.body
        )


class StubAsking:
    """`cajasync.broker.ports.Asking` on the stub: answers come to a private queue."""

    def __init__(
        self, broker: StubBroker, settings: Settings, identity: TerminalIdentity, address: str
    ) -> None:
        self._broker = broker
        self._terminal = identity.terminal
        self._user = username(settings.broker_url)
        self._address = address

    def ask(self, question: Question, *, timeout: float, until: Callable[[bytes], bool]) -> int:
        kind = request_kind(question)
        body = encode(question)
        message = Message(
            UP_EXCHANGE,
            request_routing_key(self._terminal, kind),
            body,
            user_id=self._user,
            headers={"terminal": self._terminal, "request": kind},
            reply_to=self._address,
            correlation_id=question.request_id,
        )
        confirm = self._broker.publish(message, mandatory=True)
        if confirm.returned or not confirm.ok:
            raise refused(kind, self._terminal, "stub", unroutable=confirm.returned)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._broker.get(self._address)
            if answer is not None:
                if answer.correlation_id == question.request_id and until(answer.body):
                    return len(body)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise no_answer(timeout)
            with self._broker.lock:
                if not self._broker.messages(self._address):
                    self._broker.lock.wait(min(left, IDLE_WAIT_S))


class StubFeedLink(StubSession):
    """`cajasync.broker.ports.FeedSession` on the stub."""

    def _declare(self, channel: StubChannel) -> None:
        channel.exchange_declare(DOWN_EXCHANGE, "topic", durable=True)

    def publish(self, event: Event) -> None:
        message = Message(
            DOWN_EXCHANGE,
            event.routing_key,
            event.body,
            message_id=f"{event.stream}/{event.first_seq}-{event.last_seq}",
            headers={"stream": event.stream, "seq": event.last_seq},
        )
        self._publish(message)

    def publish_heads(self, routing_key: str, body: bytes, *, ttl_s: float) -> None:
        expiration = str(max(1, round(ttl_s * 1000)))
        message = Message(
            DOWN_EXCHANGE, routing_key, body, headers={"heads": True}, expiration=expiration
        )
        self._publish(message)
