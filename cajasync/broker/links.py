"""The relays' pika sessions (`cajasync.broker.ports.TerminalSession` and `FeedSession`),
and the one-shot request a pull or a high-water question sends.

`Link` is a `PikaSession` (one `pika.SelectConnection`, one channel in confirm mode) that
declares the terminal's topology, optionally consumes the terminal's own queue and, on a
second channel, the streams of its shared scopes from the offsets the handler gives (their
deliveries get negative tags, so one `ack` settles either), publishes
operations and requests as the broker user, and hands every broker event to a
`LinkHandler`, returns included. `FeedLink` declares `cajasync.down` and publishes change
events and stream heads. pika's exceptions stop here: `run()` raises BrokerUnavailable.
"""

from __future__ import annotations

import datetime as dt
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
    StreamStart,
    declare_own_queue,
    declare_terminal,
    request_routing_key,
    terminal_queue,
)
from cajasync.errors import BrokerUnavailable, CajasyncError
from schemas.codec import encode
from schemas.unions import Request

log = logging.getLogger(__name__)

# When the feed relay published a change event, in milliseconds (a stream read from a
# moment starts at a chunk stamped by the whole second; the events before the moment within
# that second are skipped by this).
PUBLISHED_AT = "published-at"


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
        self._streams: pika.channel.Channel | None = None
        self._not_before: dict[str, float] = {}  # streams read from a moment: until when to skip
        self._streams_starting = False  # the session is ready once the streams are read

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
        """Acknowledge a server message (and, if `multiple`, every earlier one of its
        channel: a negative tag is a stream's)."""
        with broker_errors(self._url, "acknowledging server messages"):
            if tag < 0:
                self._streams_channel().basic_ack(-tag, multiple=multiple)
            else:
                self._open_channel().basic_ack(tag, multiple=multiple)

    def reject(self, tag: int) -> None:
        """Drop a message for good (no requeue), so it never blocks the queue; a stream's
        is acknowledged (a stream keeps it for every other reader)."""
        with broker_errors(self._url, "rejecting a server message"):
            if tag < 0:
                self._streams_channel().basic_ack(-tag, multiple=False)
            else:
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
            callback=lambda _frame: self._guard(self._open_streams),
        )

    # -- the streams of the shared scopes --------------------------------------------------

    def _open_streams(self) -> None:
        starts = self._handler.stream_starts()
        if not starts or self._connection is None:
            self._ready()
            return
        self._streams_starting = True
        self._connection.channel(
            on_open_callback=lambda channel: self._guard(
                lambda: self._read_streams(channel, starts)
            )
        )

    def _read_streams(self, channel: pika.channel.Channel, starts: dict[str, StreamStart]) -> None:
        """Consume every stream from its start (a stream needs a prefetch and manual acks);
        the session is ready once the broker accepted the last one."""
        self._streams = channel
        self._not_before = {
            stream: start.timestamp()
            for stream, start in starts.items()
            if isinstance(start, dt.datetime)
        }
        channel.add_on_close_callback(self._on_streams_closed)
        channel.add_on_cancel_callback(self._on_stream_cancelled)
        channel.basic_qos(prefetch_count=self._prefetch or 0)
        names = list(starts)
        for stream in names:
            channel.basic_consume(
                stream,
                self._on_stream_deliver,
                consumer_tag=stream,
                arguments={"x-stream-offset": starts[stream]},
                callback=(lambda _f: self._streams_ready()) if stream == names[-1] else None,
            )

    def _streams_ready(self) -> None:
        if self._streams_starting:
            self._streams_starting = False
            self._ready()

    def _streams_channel(self) -> pika.channel.Channel:
        if self._streams is None or not self._streams.is_open:
            raise pika.exceptions.ChannelWrongStateError("the streams' channel is not open")
        return self._streams

    def _on_streams_closed(self, _channel: pika.channel.Channel, reason: BaseException) -> None:
        """A stream missing (a server not yet migrated) or not readable (a till moved to
        another location) leaves the till on its queue alone, said in the log; any other
        close ends the session, which reconnects and reads on from the stored offsets."""
        self._streams = None
        if self._closing:
            return
        code = getattr(reason, "reply_code", None)
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and code in (403, 404):
            log.warning(
                "terminal %s: cannot read the change streams (%s %s): changes of the chain "
                "and of location %s reach this till only through its queue. %s",
                self._identity.terminal,
                code,
                reason.reply_text,
                self._identity.location,
                "Run `cajasync server init` on the server (it declares the streams)"
                if code == 404
                else "If the till was moved, run `cajasync terminal init` with its new "
                "location on the till",
            )
            self._streams_ready()
            return
        self.fail(self._broker_error(reason, "reading the change streams"))

    def _on_stream_cancelled(self, frame: Any) -> None:
        """The broker stopped a stream's consumer (its member's node went down): read again
        from the stored offsets on a new session."""
        tag = getattr(frame.method, "consumer_tag", "?")
        self.fail(
            BrokerUnavailable(f"RabbitMQ at {self._where} stopped the reading of stream {tag}")
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

    def _on_stream_deliver(
        self,
        _channel: pika.channel.Channel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        offset = (properties.headers or {}).get("x-stream-offset")
        tag, stream = -(method.delivery_tag or 0), method.consumer_tag or ""
        if not isinstance(offset, int):  # RabbitMQ always sets it on a stream's delivery
            log.warning("a message of stream %s came without its offset: skipped", stream)
            self._guard(lambda: self.reject(tag))
            return
        if self._before_start(stream, properties):
            self._guard(lambda: self.reject(tag))  # published before the till read from
            return
        routing_key = method.routing_key or ""
        self._guard(lambda: self._handler.on_stream_message(tag, stream, offset, routing_key, body))

    def _before_start(self, stream: str, properties: pika.spec.BasicProperties) -> bool:
        """Whether a delivery of a stream read from a moment was published before it (the
        stream starts at the chunk of that whole second); the first one after ends that."""
        moment = self._not_before.get(stream)
        if moment is None:
            return False
        published = (properties.headers or {}).get(PUBLISHED_AT)
        if isinstance(published, int) and published < moment * 1000:
            return True
        del self._not_before[stream]
        return False

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
            headers={"stream": event.stream, "seq": event.last_seq, PUBLISHED_AT: _now_ms()},
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
            headers={"heads": True, PUBLISHED_AT: _now_ms()},
        )
        with broker_errors(self._url, f"publishing stream heads to {routing_key}"):
            self._open_channel().basic_publish(DOWN_EXCHANGE, routing_key, body, properties)

    def _declare(self, channel: pika.channel.Channel, then: Callable[[], None]) -> None:
        channel.exchange_declare(
            DOWN_EXCHANGE, ExchangeType("topic"), durable=True, callback=lambda _f: then()
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


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
