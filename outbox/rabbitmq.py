"""The relay's pika adapter: one asynchronous connection, one channel in confirm mode.

`Link` owns a `pika.SelectConnection` and its ioloop. It declares the terminal's topology,
turns on publisher confirms (acks arrive asynchronously, so many publishes are in flight
at once), optionally consumes the terminal's own queue, and hands every broker event to
a `LinkHandler`. pika's exceptions stop here: `run()` raises BrokerUnavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import pika
import pika.channel
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec

from cajasync.broker import (
    PIKA_ERRORS,
    blocking_channel,
    broker_errors,
    describe,
    parameters,
    username,
)
from cajasync.errors import BrokerUnavailable, CajasyncError
from cajasync.settings import Settings
from cajasync.topology import UP_EXCHANGE, declare_terminal, op_routing_key, terminal_queue
from outbox.claims import OutRow
from outbox.identity import TerminalIdentity
from schemas.codec import encode
from schemas.unions import Request

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/msgpack"
PERSISTENT = 2
NO_ROUTE = 312
OPENING_WATCH_S = 0.2
CLOSE_GRACE_S = 2.0  # a broker that does not answer Connection.Close in time is left


class LinkHandler(Protocol):
    """What the relay does with broker events (all called on the ioloop thread)."""

    def wants_stop(self) -> bool:
        """True when the link should give up opening and close."""

    def on_ready(self) -> None:
        """The channel is in confirm mode (and consuming): publishing may start."""

    def on_confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        """The broker acked (ok) or nacked publishes up to `tag`."""

    def on_return(self, seq: int, reason: str) -> None:
        """The broker returned the publish of `seq` (an ack for it follows)."""

    def on_message(self, tag: int, routing_key: str, body: bytes) -> None:
        """A message arrived on the terminal's queue; ack or reject it by `tag` later."""


class Link:
    """One broker session for one terminal; `run()` blocks until it is closed or lost."""

    def __init__(
        self,
        settings: Settings,
        identity: TerminalIdentity,
        handler: LinkHandler,
        *,
        prefetch: int | None,
    ) -> None:
        self._url = settings.broker_url
        self._user = username(settings.broker_url)
        self._identity = identity
        self._handler = handler
        self._prefetch = prefetch  # None: publish only, do not consume
        self._connection: pika.SelectConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._closing = False
        self._error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> None:
        """Connect and serve until `close()`; BrokerUnavailable if it cannot open or drops."""
        with broker_errors(self._url, "connecting"):
            self._connection = pika.SelectConnection(
                parameters(self._url),
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
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Close the session on request; `run()` then returns."""
        self._closing = True
        connection = self._connection
        if connection is None or connection.is_closed:
            return
        if connection.is_closing:
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

    # -- publishing and acknowledging ----------------------------------------------------

    def publish(self, row: OutRow) -> None:
        """Publish one outbox row, persistent and mandatory, to `cajasync.up`."""
        terminal = self._identity.terminal
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=CONTENT_TYPE,
            message_id=f"{row.op_id}/{row.version}",
            user_id=self._user,
            headers={"terminal": terminal, "seq": row.seq, "topic": row.topic},
        )
        with broker_errors(self._url, f"publishing seq {row.seq} of terminal {terminal}"):
            self._open_channel().basic_publish(
                UP_EXCHANGE,
                op_routing_key(terminal, row.topic),
                row.body,
                properties,
                mandatory=True,
            )

    def publish_request(self, request: Request) -> None:
        """Publish a request (snapshot, catch-up, images) to `cajasync.up`, mandatory."""
        terminal = self._identity.terminal
        kind = request_kind(request)
        with broker_errors(self._url, f"sending a {kind} request of terminal {terminal}"):
            self._open_channel().basic_publish(
                UP_EXCHANGE,
                request_routing_key(terminal, kind),
                encode(request),
                request_properties(self._user, terminal, kind),
                mandatory=True,
            )

    def ack(self, tag: int, *, multiple: bool) -> None:
        """Acknowledge a server message (and, if `multiple`, every earlier one)."""
        with broker_errors(self._url, "acknowledging server messages"):
            self._open_channel().basic_ack(tag, multiple=multiple)

    def reject(self, tag: int) -> None:
        """Drop a message for good (no requeue), so it never blocks the queue."""
        with broker_errors(self._url, "rejecting a server message"):
            self._open_channel().basic_reject(tag, requeue=False)

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
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(
        self, connection: pika.connection.Connection, error: BaseException | str
    ) -> None:
        if not self._closing:
            self._error = self._broker_error(error, "connecting")
        self._stop_ioloop()

    def _on_closed(self, connection: pika.connection.Connection, reason: BaseException) -> None:
        if not self._closing and self._error is None:
            self._error = self._broker_error(reason, "relaying")
        self._stop_ioloop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        identity = self._identity
        declare_terminal(channel, identity.terminal, identity.location, identity.pos, identity.kind)
        # RPCs queue behind each other: QosOk means every declaration above succeeded.
        channel.basic_qos(prefetch_count=self._prefetch or 0, callback=self._on_qos)

    def _on_qos(self, _frame: pika.frame.Method[pika.spec.Basic.QosOk]) -> None:
        self._open_channel().confirm_delivery(self._on_ack_nack, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: pika.frame.Method[pika.spec.Confirm.SelectOk]) -> None:
        if self._prefetch is None:
            self._guard(self._handler.on_ready)
            return
        self._open_channel().basic_consume(
            terminal_queue(self._identity.terminal),
            self._on_deliver,
            callback=lambda _frame: self._guard(self._handler.on_ready),
        )

    def _on_channel_closed(self, _channel: pika.channel.Channel, reason: BaseException) -> None:
        self._channel = None
        if self._closing:
            return
        self.fail(self._broker_error(reason, f"relaying terminal {self._identity.terminal}"))

    def _on_ack_nack(
        self, frame: pika.frame.Method[pika.spec.Basic.Ack | pika.spec.Basic.Nack]
    ) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        self._guard(
            lambda: self._handler.on_confirm(method.delivery_tag, multiple=method.multiple, ok=ok)
        )

    def _on_return(
        self,
        _channel: pika.channel.Channel,
        method: pika.spec.Basic.Return,
        properties: pika.spec.BasicProperties,
        _body: bytes,
    ) -> None:
        headers = properties.headers or {}
        seq = headers.get("seq")
        reason = returned_reason(
            method.reply_code or 0,
            method.reply_text or "",
            method.exchange or "",
            method.routing_key or "",
        )
        if "request" in headers:
            log.warning(
                "terminal %s: %s request not delivered: %s",
                self._identity.terminal,
                headers["request"],
                reason,
            )
        elif not isinstance(seq, int):
            log.warning("broker returned a message without a seq header: %s", method)
        else:
            self._guard(lambda: self._handler.on_return(seq, reason))

    def _on_deliver(
        self,
        _channel: pika.channel.Channel,
        method: pika.spec.Basic.Deliver,
        _properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        tag, routing_key = method.delivery_tag or 0, method.routing_key or ""
        self._guard(lambda: self._handler.on_message(tag, routing_key, body))

    # -- helpers -------------------------------------------------------------------------

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
            log.warning("RabbitMQ at %s did not answer the close; leaving", describe(self._url))
            self._stop_ioloop()

    def _stop_ioloop(self) -> None:
        assert self._connection is not None
        self._connection.ioloop.stop()

    def _open_channel(self) -> pika.channel.Channel:
        if self._channel is None or not self._channel.is_open:
            raise pika.exceptions.ChannelWrongStateError("the relay channel is not open")
        return self._channel

    def _broker_error(self, error: BaseException | str, doing: str) -> BaseException:
        """The BrokerUnavailable for a pika error reported through a callback."""
        if isinstance(error, pika.exceptions.ChannelClosedByBroker):
            return BrokerUnavailable(
                f"RabbitMQ at {describe(self._url)} closed the channel while {doing}: "
                f"{error.reply_code} {error.reply_text}"
            )
        if isinstance(error, pika.exceptions.ConnectionClosedByBroker):
            return BrokerUnavailable(
                f"RabbitMQ at {describe(self._url)} closed the connection while {doing}: "
                f"{error.reply_code} {error.reply_text}"
            )
        cause = error if isinstance(error, PIKA_ERRORS) else pika.exceptions.AMQPError(error)
        try:
            with broker_errors(self._url, doing):
                raise cause
        except BrokerUnavailable as mapped:
            return mapped
        raise AssertionError("broker_errors maps every pika error")  # pragma: no cover


def returned_reason(code: int, text: str, exchange: str, routing_key: str) -> str:
    """Why the broker returned a mandatory publish, and what the operator should do."""
    if code == NO_ROUTE:
        return (
            f"unroutable: no queue bound to {routing_key} on {exchange} "
            "– run `cajasync server init`"
        )
    return f"returned by the broker ({code} {text}) for {routing_key} on {exchange}"


def request_kind(request: Request) -> str:
    """The request's tag (`snapshot`, `catch-up`, `images`): the last word of its routing key."""
    return str(type(request).__struct_config__.tag)


def request_routing_key(terminal: str, kind: str) -> str:
    return f"req.{terminal}.{kind}"


def request_properties(user: str, terminal: str, kind: str) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=PERSISTENT,
        content_type=CONTENT_TYPE,
        user_id=user,
        headers={"terminal": terminal, "request": kind},
    )


def send_request(settings: Settings, identity: TerminalIdentity, request: Request) -> None:
    """Publish one request on its own connection and wait for the broker's confirm.

    For callers outside a relay session (a pull starts with this). Raises
    BrokerUnavailable when the broker cannot be reached, CajasyncError when it refuses
    the request (no `cajasync.requests` queue: the server was never initialised).
    """
    kind = request_kind(request)
    terminal = identity.terminal
    doing = f"sending a {kind} request of terminal {terminal}"
    with blocking_channel(settings.broker_url, doing=doing) as channel:
        channel.confirm_delivery()
        try:
            channel.basic_publish(
                UP_EXCHANGE,
                request_routing_key(terminal, kind),
                encode(request),
                request_properties(username(settings.broker_url), terminal, kind),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            raise CajasyncError(
                f"the {kind} request of terminal {terminal} reached no queue: "
                "run `cajasync server init` against this broker"
            ) from None
        except pika.exceptions.NackError:
            raise CajasyncError(
                f"RabbitMQ at {describe(settings.broker_url)} refused the {kind} request of "
                f"terminal {terminal} (a queue is full or has no majority); try again"
            ) from None
