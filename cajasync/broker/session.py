"""One asynchronous broker session: a `pika.SelectConnection`, one channel in confirm mode.

`PikaSession` (pika's `cajasync.broker.ports.ConfirmSession`) owns the connection, its
ioloop and the session's lifecycle: opening
(with a watchdog that gives up when the handler wants to stop), publisher confirms
(acks arrive asynchronously, so many publishes are in flight at once), closing, and the
mapping of every pika error to BrokerUnavailable. A subclass declares what it needs on
the new channel (`_declare`), may start more once confirms are on (`_start`), and adds
its own publishing methods. pika's exceptions stop here: `run()` raises BrokerUnavailable.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Final, Generic, TypeVar

import pika
import pika.channel
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec

from cajasync.broker.ports import SessionHandler
from cajasync.broker.rabbitmq import PIKA_ERRORS, broker_errors, describe, parameters
from cajasync.errors import BrokerUnavailable

log = logging.getLogger(__name__)

OPENING_WATCH_S: Final = 0.2
CLOSE_GRACE_S: Final = 2.0  # a broker that does not answer Connection.Close in time is left


H = TypeVar("H", bound=SessionHandler)


class PikaSession(ABC, Generic[H]):
    """One broker session; `run()` blocks until it is closed or lost.

    `connecting` and `serving` name what the session was doing in its errors.
    """

    def __init__(self, url: str, handler: H, *, connecting: str, serving: str) -> None:
        self._url = url
        self._handler = handler
        self._connecting = connecting
        self._serving = serving
        self._connection: pika.SelectConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._closing = False
        self._opened = False
        self._where = describe(url)  # the node this session is on, once it opened
        self._error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> None:
        """Connect to the first broker URL that opens (a cluster's nodes, in order) and
        serve until `close()`; BrokerUnavailable if none opens or the session drops."""
        self._opened = False
        for params in parameters(self._url):
            self._error = None
            self._serve(params)
            if self._opened or self._closing:
                break
            log.debug("RabbitMQ at %s:%s did not open: %s", params.host, params.port, self._error)
        if self._error is not None:
            raise self._error

    def _serve(self, params: pika.URLParameters) -> None:
        with broker_errors(self._url, self._connecting):
            self._connection = pika.SelectConnection(
                params,
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
            )
        ioloop = self._connection.ioloop
        ioloop.call_later(OPENING_WATCH_S, self._watch_opening)
        try:
            ioloop.start()
        finally:
            ioloop.close()  # its wake-up socket pair

    def close(self) -> None:
        """Close the session on request; `run()` then returns."""
        self._closing = True
        connection = self._connection
        if connection is None or connection.is_closed or connection.is_closing:
            return
        connection.close()
        connection.ioloop.call_later(CLOSE_GRACE_S, self._stop_if_still_closing)

    def fail(self, error: BaseException) -> None:
        """End the session because of `error`, which `run()` will raise."""
        if self._error is None:
            self._error = error
        if not self._closing:
            self.close()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` on the ioloop after `delay` seconds; its errors end the session."""
        assert self._connection is not None
        self._connection.ioloop.call_later(delay, lambda: self._guard(callback))

    # -- hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _declare(self, channel: pika.channel.Channel, then: Callable[[], None]) -> None:
        """Declare what the session needs on its new channel; call `then` once it is done."""

    def _start(self) -> None:
        """Confirms are on: tell the handler (a consuming session starts consuming first)."""
        self._ready()

    # -- pika callbacks ------------------------------------------------------------------

    def _watch_opening(self) -> None:
        connection = self._connection
        if connection is None or self._channel is not None or connection.is_closed:
            return
        if self._handler.wants_stop():
            self.close()
        else:
            connection.ioloop.call_later(OPENING_WATCH_S, self._watch_opening)

    def _on_open(self, connection: pika.connection.Connection) -> None:
        self._opened = True
        params = connection.params
        if params is not None:
            self._where = f"{params.host}:{params.port}"
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, _c: pika.connection.Connection, error: BaseException | str) -> None:
        if not self._closing:
            self._error = self._broker_error(error, self._connecting)
        self._stop_ioloop()

    def _on_closed(self, _c: pika.connection.Connection, reason: BaseException) -> None:
        if not self._closing and self._error is None:
            self._error = self._broker_error(reason, self._serving)
        self._stop_ioloop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        self._declare(channel, self._confirm_delivery)

    def _confirm_delivery(self) -> None:
        self._open_channel().confirm_delivery(self._on_ack_nack, callback=lambda _f: self._start())

    def _on_channel_closed(self, _channel: pika.channel.Channel, reason: BaseException) -> None:
        self._channel = None
        if not self._closing:
            self.fail(self._broker_error(reason, self._serving))

    def _on_ack_nack(
        self, frame: pika.frame.Method[pika.spec.Basic.Ack | pika.spec.Basic.Nack]
    ) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        self._guard(
            lambda: self._handler.on_confirm(method.delivery_tag, multiple=method.multiple, ok=ok)
        )

    # -- helpers -------------------------------------------------------------------------

    def _ready(self) -> None:
        self._guard(self._handler.on_ready)

    def _guard(self, callback: Callable[[], None]) -> None:
        """Run a handler callback; an error ends the session instead of killing the ioloop."""
        if self._error is not None:
            return
        try:
            callback()
        except Exception as exc:  # re-raised by run() once the connection has closed
            self.fail(exc)

    def _stop_if_still_closing(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            log.warning("RabbitMQ at %s did not answer the close; leaving", self._where)
            self._stop_ioloop()

    def _stop_ioloop(self) -> None:
        assert self._connection is not None
        self._connection.ioloop.stop()

    def _open_channel(self) -> pika.channel.Channel:
        """The channel, or ChannelWrongStateError (for `broker_errors` to map) if it is gone."""
        if self._channel is None or not self._channel.is_open:
            raise pika.exceptions.ChannelWrongStateError("the channel is not open")
        return self._channel

    def _broker_error(self, error: BaseException | str, doing: str) -> BaseException:
        """The BrokerUnavailable for a pika error reported through a callback."""
        if isinstance(error, pika.exceptions.ChannelClosedByBroker):
            return BrokerUnavailable(
                f"RabbitMQ at {self._where} closed the channel while {doing}: "
                f"{error.reply_code} {error.reply_text}"
            )
        if isinstance(error, pika.exceptions.ConnectionClosedByBroker):
            return BrokerUnavailable(
                f"RabbitMQ at {self._where} closed the connection while {doing}: "
                f"{error.reply_code} {error.reply_text}"
            )
        cause = error if isinstance(error, PIKA_ERRORS) else pika.exceptions.AMQPError(error)
        try:
            with broker_errors(self._url, doing):
                raise cause
        except BrokerUnavailable as mapped:
            return mapped
        raise AssertionError("broker_errors maps every pika error")  # pragma: no cover
