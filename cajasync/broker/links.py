"""The relays' pika sessions (`cajasync.broker.ports.TerminalSession` and `FeedSession`),
and the one-shot request a pull or a high-water question sends.

`Link` is a `PikaSession` (one `pika.SelectConnection`, one channel in confirm mode) that
declares the terminal's topology, optionally consumes the terminal's own queue, publishes
operations and requests as the broker user, and hands every broker event to a
`LinkHandler`, returns included. `FeedLink` declares `cajasync.down` and publishes change
events and stream heads. pika's exceptions stop here: `run()` raises BrokerUnavailable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.exceptions
import pika.spec
from pika.exchange_type import ExchangeType

from cajasync.broker.ports import (
    CONTENT_TYPE,
    PERSISTENT,
    Event,
    LinkHandler,
    SessionHandler,
    request_kind,
    returned_reason,
)
from cajasync.broker.rabbitmq import blocking_channel, broker_errors, describe, username
from cajasync.broker.session import PikaSession
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.topology import (
    DOWN_EXCHANGE,
    SHARED_USERS,
    UP_EXCHANGE,
    declare_own_queue,
    declare_terminal,
    request_routing_key,
    terminal_queue,
)
from cajasync.errors import CajasyncError
from schemas.codec import encode
from schemas.unions import Request

log = logging.getLogger(__name__)


class Link(PikaSession[LinkHandler]):
    """One broker session for one terminal; `run()` blocks until it is closed or lost."""

    def __init__(
        self,
        settings: Settings,
        identity: TerminalIdentity,
        handler: LinkHandler,
        *,
        prefetch: int | None,
    ) -> None:
        super().__init__(
            settings.broker_url,
            handler,
            connecting="connecting",
            serving=f"relaying terminal {identity.terminal}",
        )
        self._user = username(settings.broker_url)
        self._identity = identity
        self._prefetch = prefetch  # None: publish only, do not consume

    # -- publishing and acknowledging ----------------------------------------------------

    def publish(
        self, routing_key: str, body: bytes, *, message_id: str, headers: dict[str, Any]
    ) -> None:
        """Publish one operation, persistent and mandatory, to `cajasync.up`."""
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=CONTENT_TYPE,
            message_id=message_id,
            user_id=self._user,
            headers=headers,
            timestamp=int(time.time()),  # `cajasync queues` shows the age of the oldest
        )
        doing = f"publishing seq {headers.get('seq')} of terminal {self._identity.terminal}"
        with broker_errors(self._url, doing):
            self._open_channel().basic_publish(
                UP_EXCHANGE, routing_key, body, properties, mandatory=True
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

    # -- PikaSession hooks ----------------------------------------------------------------

    def _declare(self, channel: pika.channel.Channel, then: Callable[[], None]) -> None:
        channel.add_on_return_callback(self._on_return)
        identity = self._identity
        if self._user in SHARED_USERS:
            declare_terminal(
                channel, identity.terminal, identity.location, identity.pos, identity.kind
            )
        else:  # its own broker user may not bind: the server bound its queue by the registry
            declare_own_queue(channel, identity.terminal)
        # RPCs queue behind each other: QosOk means every declaration above succeeded.
        channel.basic_qos(prefetch_count=self._prefetch or 0, callback=lambda _f: then())

    def _start(self) -> None:
        if self._prefetch is None:
            self._ready()
            return
        self._open_channel().basic_consume(
            terminal_queue(self._identity.terminal),
            self._on_deliver,
            callback=lambda _frame: self._ready(),
        )

    # -- pika callbacks ------------------------------------------------------------------

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


class FeedLink(PikaSession[SessionHandler]):
    """One publishing session on `cajasync.down`; `run()` blocks until closed or lost."""

    def __init__(self, settings: Settings, handler: SessionHandler) -> None:
        super().__init__(
            settings.broker_url,
            handler,
            connecting="connecting the feed relay",
            serving="publishing change events",
        )

    def publish(self, event: Event) -> None:
        """Publish one change event, persistent; not mandatory (no terminal bound is normal)."""
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=CONTENT_TYPE,
            message_id=f"{event.stream}/{event.first_seq}-{event.last_seq}",
            timestamp=int(time.time()),
            headers={"stream": event.stream, "seq": event.last_seq},
        )
        with broker_errors(self._url, f"publishing {event.stream} seq {event.first_seq}"):
            self._open_channel().basic_publish(
                DOWN_EXCHANGE, event.routing_key, event.body, properties
            )

    def publish_heads(self, routing_key: str, body: bytes, *, ttl_s: float) -> None:
        """Publish a stream-heads message; it expires after `ttl_s` (a newer one follows, so
        the queue of a terminal that is offline does not keep piling them up)."""
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            expiration=str(max(1, round(ttl_s * 1000))),
            timestamp=int(time.time()),
            headers={"heads": True},
        )
        with broker_errors(self._url, f"publishing stream heads to {routing_key}"):
            self._open_channel().basic_publish(DOWN_EXCHANGE, routing_key, body, properties)

    def _declare(self, channel: pika.channel.Channel, then: Callable[[], None]) -> None:
        channel.exchange_declare(
            DOWN_EXCHANGE, ExchangeType("topic"), durable=True, callback=lambda _f: then()
        )


def request_properties(user: str, terminal: str, kind: str) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=PERSISTENT,
        content_type=CONTENT_TYPE,
        user_id=user,
        headers={"terminal": terminal, "request": kind},
        timestamp=int(time.time()),
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
