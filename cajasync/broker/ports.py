"""The broker interface the wings and processes use; `rabbitmq` (pika) and `stub` honour it.

Two sides:

* the blocking side (server ingest, the request handler): a `Broker` opens one
  `ConsumeSession` at a time; its deliveries come as `Delivery` values, and its `out`
  acks, nacks, publishes down and dead-letters (confirmed); `replies()` sends a request's
  replies to a terminal's queue with a confirm window and notices a terminal without one.
  The loop around it is written once, in `cajasync.broker.consumer`.
* the asynchronous side (the terminal relay, the feed relay): one `ConfirmSession` on a
  loop of its own, driving a handler with callbacks (`on_ready`, `on_confirm`, `on_return`,
  `on_message`); `TerminalSession` and `FeedSession` add what each relay publishes.

Everything here is plain values and protocols: no pika, no outbox or inbox types. An
adapter raises only cajasync errors (BrokerUnavailable when the broker is away).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.topology import StreamStart
from schemas.questions import Question
from schemas.unions import Request

CONTENT_TYPE: Final = "application/msgpack"
PERSISTENT: Final = 2
REASON_HEADER: Final = "x-cajasync-reason"
ROUTING_KEY_HEADER: Final = "x-cajasync-routing-key"
QUEUE_HEADER: Final = "x-cajasync-queue"  # the queue a dead letter was taken from
USER_HEADER: Final = "x-cajasync-user-id"  # its user_id (a publish may only carry its own)
DEAD_AT_HEADER: Final = "x-cajasync-dead-at"  # when our code dead-lettered it (ISO 8601, UTC)
NO_ROUTE: Final = 312


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message taken from a queue, as the consumers keep it."""

    delivery_tag: int
    routing_key: str
    body: bytes
    message_id: str | None = None
    user_id: str | None = None
    content_type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None  # a question's answer address (direct reply-to)
    correlation_id: str | None = None  # and the id its answers carry


@dataclass(frozen=True)
class Event:
    """One change-feed message to publish: changes of one stream, in seq order."""

    routing_key: str
    stream: str
    first_seq: int
    last_seq: int
    ids: list[int]
    body: bytes


def returned_reason(code: int, text: str, exchange: str, routing_key: str) -> str:
    """Why the broker returned a mandatory publish, and what the operator should do."""
    if code == NO_ROUTE:
        return (
            f"unroutable: no queue bound to {routing_key} on {exchange} "
            "– run `cajasync server init`"
        )
    return f"returned by the broker ({code} {text}) for {routing_key} on {exchange}"


def request_kind(request: Request) -> str:
    """The request's tag (`snapshot`, `catch-up`, `images`, `counts`...): the last word of
    its routing key."""
    return str(type(request).__struct_config__.tag)


# -- the blocking side -------------------------------------------------------------------


class Outbound(Protocol):
    """Acks, nacks and publishes of one consume session."""

    def ack(self, last_tag: int) -> None:
        """Ack every delivery up to `last_tag`."""

    def nack(self, last_tag: int) -> None:
        """Give every delivery up to `last_tag` back to the queue."""

    def send_down(self, routing_key: str, body: bytes) -> None:
        """Publish to `cajasync.down`, persistent, unconfirmed (receipts, replay requests)."""

    def dead_letter(self, message: Delivery, reason: str) -> None:
        """Put `message` on the dead-letter exchange with `reason`; return once confirmed."""


class Replies(Protocol):
    """Confirmed replies to terminals, many in flight at once."""

    def send(self, terminal: str, body: bytes) -> bool:
        """Publish one reply; False once a reply of this request came back (no queue)."""

    def reply(self, address: str, correlation_id: str, body: bytes) -> None:
        """Publish one answer to a question's `address` (its reply-to) with its
        `correlation_id`, confirmed by `settle()`; an asker gone meanwhile loses it."""

    def settle(self) -> bool:
        """Wait until every reply is confirmed; False if one was returned. Starts afresh."""


class ConsumeSession(Protocol):
    """One blocking broker session consuming one queue."""

    @property
    def out(self) -> Outbound: ...

    def deliveries(self, *, timeout: float) -> Iterator[Delivery | None]:
        """The queue's deliveries; None after `timeout` seconds without one."""

    def cancel(self) -> None:
        """Stop consuming (deliveries not handed out yet go back to the queue)."""

    def sleep(self, seconds: float) -> None:
        """Wait, keeping the session serviced; ends early once the session's `stop` is set."""

    def replies(self) -> Replies:
        """A confirmed reply channel on this session."""


class Broker(Protocol):
    """Opens blocking consume sessions."""

    def consuming(
        self,
        queue: str,
        *,
        prefetch: int,
        declare: Callable[[Any], object],
        connecting: str,
        stop: threading.Event | None,
    ) -> AbstractContextManager[ConsumeSession]:
        """A session consuming `queue` after `declare(channel)`; BrokerUnavailable if not."""


class Asking(Protocol):
    """A terminal's channel for questions to the server, answered to its direct reply-to
    address, so a `terminal run` consuming the terminal's queue meanwhile changes nothing."""

    def ask(self, question: Question, *, timeout: float, until: Callable[[bytes], bool]) -> int:
        """Publish `question` (confirmed, mandatory; `correlation_id` = its `request_id`) and
        hand every answer body correlated with it to `until` until that returns True;
        return the bytes published. NoAnswer when the server is silent for `timeout` s."""


Askers = Callable[[Settings, TerminalIdentity], AbstractContextManager[Asking]]
"""Opens a terminal's question channel (closed on exit)."""


# -- the asynchronous side ---------------------------------------------------------------


class SessionHandler(Protocol):
    """What a session's owner does with broker events (all called on the session's loop)."""

    def wants_stop(self) -> bool:
        """True when the session should give up opening and close."""

    def on_ready(self) -> None:
        """The channel is in confirm mode (and consuming, if it does): publishing may start."""

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        """The broker acked (ok) or nacked publishes up to `tag`."""


class LinkHandler(SessionHandler, Protocol):
    """What the terminal relay does with broker events."""

    def on_return(self, seq: int, reason: str) -> None:
        """The broker returned the publish of `seq` (an ack for it follows)."""

    def on_message(self, tag: int, routing_key: str, body: bytes) -> None:
        """A message arrived on the terminal's queue; ack or reject it by `tag` later."""

    def stream_starts(self) -> dict[str, StreamStart]:
        """The streams to read (those of the till's shared scopes), each from where."""

    def on_stream_message(
        self, tag: int, stream: str, offset: int, routing_key: str, body: bytes
    ) -> None:
        """A message arrived from `stream` at `offset`. Its `tag` is negative (the streams
        have their own channel and tags): ack it by that tag, with the queue's."""


class ConfirmSession(Protocol):
    """One asynchronous session with publisher confirms; `run()` blocks until closed or lost."""

    def run(self) -> None:
        """Connect and serve until `close()`; BrokerUnavailable if it cannot open or drops."""

    def close(self) -> None:
        """Close the session on request; `run()` then returns."""

    def fail(self, error: BaseException) -> None:
        """End the session because of `error`, which `run()` will raise."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` on the session's loop after `delay` seconds."""


class TerminalSession(ConfirmSession, Protocol):
    """A terminal's session: operations and requests up, its own queue consumed."""

    def publish(
        self, routing_key: str, body: bytes, *, message_id: str, headers: dict[str, Any]
    ) -> None:
        """Publish one operation to `cajasync.up`, persistent and mandatory, as the broker
        user; `headers` carry its `seq` (a return names it)."""

    def publish_request(self, request: Request) -> None:
        """Publish a request (snapshot, catch-up, images) to `cajasync.up`, mandatory."""

    def ack(self, tag: int, *, multiple: bool) -> None:
        """Acknowledge a server message (and, if `multiple`, every earlier one)."""

    def reject(self, tag: int) -> None:
        """Drop a message for good (no requeue), so it never blocks the queue."""


class FeedSession(ConfirmSession, Protocol):
    """The feed relay's session: change events and stream heads to `cajasync.down`."""

    def publish(self, event: Event) -> None:
        """Publish one change event, persistent; not mandatory."""

    def publish_heads(self, routing_key: str, body: bytes, *, ttl_s: float) -> None:
        """Publish a stream-heads message that expires after `ttl_s`."""


class TerminalSessions(Protocol):
    """Opens a terminal's sessions (`prefetch` None: publish only, do not consume)."""

    def __call__(
        self,
        settings: Settings,
        identity: TerminalIdentity,
        handler: LinkHandler,
        *,
        prefetch: int | None,
    ) -> TerminalSession: ...


FeedSessions = Callable[[Settings, SessionHandler], FeedSession]
"""Opens the feed relay's sessions."""
