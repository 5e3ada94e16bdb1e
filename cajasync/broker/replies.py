"""The request handler's pika side: replies to a terminal's queue, with pipelined confirms.

Answers to questions (schemas/questions.py) take the same channel to the default exchange,
routed to the asker's direct reply-to address (`reply`).

Replies go to `cajasync.down` with routing key `t.<terminal>`, persistent msgpack,
`mandatory` (a terminal without a queue is noticed instead of its replies vanishing),
on their own channel in confirm mode. A BlockingChannel in confirm mode waits for the
broker after every publish: about 1 ms each (measured: 5,000 images of 20 KB took 5.4 s).
So this channel's confirms are pipelined instead: up to `window` replies are in flight,
confirms are collected by pika's callbacks while the connection is serviced, and
`settle()` waits for the last one before the request is acked (the same 5,000 images:
0.8 s; a 100,000-product snapshot: 0.3-0.4 s instead of 0.6-0.9 s).

pika offers pipelined confirms only on its asynchronous `Channel`: a BlockingChannel's
public `confirm_delivery()` makes every `basic_publish` wait for its own confirm, which is
the 1 ms per reply measured above. A BlockingChannel keeps its asynchronous channel as
`_impl`, which is what is used here (pika 1.x); opening a second, SelectConnection-based
connection for replies would lose the blocking session's serviced waits. Nothing outside
this module touches it. A nack from the broker becomes BrokerUnavailable: the session is retried and
the unacked request delivered again.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import pika
import pika.spec

from cajasync.broker.ports import CONTENT_TYPE, PERSISTENT
from cajasync.core.topology import DOWN_EXCHANGE, terminal_routing_key
from cajasync.errors import BrokerUnavailable

log = logging.getLogger(__name__)

WINDOW: Final = 64  # replies published and not yet confirmed, at most
WAIT_S: Final = 1  # longest single wait (s) for broker events; heartbeats keep flowing


class PikaReplies:
    """Confirmed replies to terminals on one channel, many in flight at once."""

    def __init__(self, connection: pika.BlockingConnection, *, window: int = WINDOW) -> None:
        self._connection = connection
        blocking = connection.channel()
        self._channel: Any = blocking._impl  # type: ignore[attr-defined]  # see the module doc
        self._window = window
        self._properties = pika.BasicProperties(delivery_mode=PERSISTENT, content_type=CONTENT_TYPE)
        self._published = 0  # delivery tags are 1, 2, ... in publish order
        self._unconfirmed: set[int] = set()
        self._returned = False
        self._nacked = False
        self._waiting = False
        self._enable_confirms()

    def send(self, terminal: str, body: bytes) -> bool:
        """Publish one reply (waiting while `window` are unconfirmed); False once the broker
        returned a reply of this request because the terminal has no queue."""
        while len(self._unconfirmed) >= self._window and not self._returned:
            self._wait()
        if self._returned:
            return False
        self._channel.basic_publish(
            DOWN_EXCHANGE, terminal_routing_key(terminal), body, self._properties, mandatory=True
        )
        self._published += 1
        self._unconfirmed.add(self._published)
        # Hand the frames to the socket now: BlockingConnection only writes when its ioloop
        # runs, and the terminal should apply page 1 while the server reads page 2.
        self._connection.process_data_events(time_limit=0)
        return True

    def reply(self, address: str, correlation_id: str, body: bytes) -> None:
        """Publish one answer to a question's reply-to `address` (default exchange), not
        mandatory: an asker that gave up is no reason to retry the question."""
        while len(self._unconfirmed) >= self._window:
            self._wait()
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, correlation_id=correlation_id)
        self._channel.basic_publish("", address, body, properties)
        self._published += 1
        self._unconfirmed.add(self._published)
        self._connection.process_data_events(time_limit=0)

    def settle(self) -> bool:
        """Wait until every reply is confirmed; False if one was returned (no queue).
        Starts the next request afresh."""
        while self._unconfirmed:
            self._wait()
        returned, self._returned = self._returned, False
        return not returned

    def _enable_confirms(self) -> None:
        selected: list[Any] = []

        def on_select_ok(frame: Any) -> None:
            selected.append(frame)
            self._wake()

        self._channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=on_select_ok)
        self._channel.add_on_return_callback(self._on_return)
        while not selected:
            self._wait()

    def _wait(self) -> None:
        """Service the connection until a confirm or return arrives; raise on a nack."""
        self._waiting = True
        self._connection.process_data_events(time_limit=WAIT_S)
        self._waiting = False
        if self._nacked:
            raise BrokerUnavailable("the broker refused (nacked) a reply; retrying the request")

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if method.multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > method.delivery_tag}
        else:
            self._unconfirmed.discard(method.delivery_tag)
        if isinstance(method, pika.spec.Basic.Nack):
            self._nacked = True
        self._wake()

    def _on_return(self, _channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        log.warning(
            "reply to %s returned by the broker (%s): the terminal has no queue",
            method.routing_key,
            method.reply_text,
        )
        self._returned = True
        self._wake()

    def _wake(self) -> None:
        """End a `_wait` now: pika's callbacks do not, its dispatched events do."""
        if self._waiting:
            self._waiting = False
            self._connection.add_callback_threadsafe(_nothing)


def _nothing() -> None:
    """An event for BlockingConnection to dispatch, so that `process_data_events` returns."""
