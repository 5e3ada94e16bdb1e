"""The pika adapter: connection parameters, error mapping, the reconnect policy, and
`RabbitBroker`, the blocking side of `cajasync.broker.ports` (consume sessions).

pika's exceptions stop here; callers see BrokerUnavailable with where and what to do.
A message field pika cannot decode becomes a marker before it can drop a connection
(`cajasync.broker.pika_fields`, installed by `parameters`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import urlsplit

import pika
import pika.exceptions
import tenacity
from pika.adapters.blocking_connection import BlockingChannel

from cajasync.broker import pika_fields
from cajasync.broker.ports import (
    CONTENT_TYPE,
    DEAD_AT_HEADER,
    PERSISTENT,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    USER_HEADER,
    Delivery,
)
from cajasync.broker.replies import PikaReplies
from cajasync.core.settings import Settings, first_url, load_settings, url_list
from cajasync.core.topology import DEAD_EXCHANGE, DOWN_EXCHANGE
from cajasync.errors import BrokerUnavailable, ConfigError

log = logging.getLogger(__name__)

HOW_TO_START = (
    "start one with `docker compose up -d rabbitmq` (compose.yaml) "
    "or `rabbitmq-server -detached`, or point CAJASYNC_BROKER_URL at yours"
)

SERVICE_S: Final = 0.25  # longest wait without servicing a connection in `serviced_sleep`

PIKA_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
)


def parameters(
    url: str, *, heartbeat: int = 30, settings: Settings | None = None
) -> list[pika.URLParameters]:
    """Connection parameters for each broker URL of `url` (one, or every node of a cluster:
    `cajasync.core.settings.url_list`), in order, with a heartbeat and short connect
    timeouts; an `amqps://` URL gets the TLS context of `tls_options` (from `settings`, else
    from the CAJASYNC_TLS_* variables).

    Every cajasync connection starts here (`connect` and `PikaSession` try the list in
    order, so a connection fails over to the next node), so this is also where pika's field
    decoding is guarded (`cajasync.broker.pika_fields`): a header pika cannot decode must
    not drop a consumer.
    """
    pika_fields.install()
    found = []
    for one in url_list(url):
        params = pika.URLParameters(one)
        if urlsplit(one).scheme == "amqps":
            params.ssl_options = tls_options(one, settings or load_settings(broker_url=url))
        params.heartbeat = heartbeat
        params.blocked_connection_timeout = 60
        params.socket_timeout = 5
        params.connection_attempts = 1
        found.append(params)
    return found


def tls_options(url: str, settings: Settings) -> pika.SSLOptions:
    """TLS for an amqps:// URL: the broker's certificate checked against the system's CAs or
    `tls_ca_file`, its name against the URL's host; a client certificate when one is set."""
    host = urlsplit(url).hostname or "localhost"
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
        if settings.tls_cert_file:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"TLS files for {describe(url)} cannot be used (CAJASYNC_TLS_CA_FILE, "
            f"CAJASYNC_TLS_CERT_FILE, CAJASYNC_TLS_KEY_FILE): {exc}"
        ) from exc
    return pika.SSLOptions(context, server_hostname=host)


def quiet_driver_logs() -> None:
    """Silence pika's own logging (its errors reach callers as BrokerUnavailable anyway)."""
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def describe(url: str) -> str:
    """`host:port` of a broker URL (of each, for a list), without credentials, for messages."""
    found = []
    for one in url_list(url) or (url,):
        parts = urlsplit(one)
        default = 5671 if parts.scheme == "amqps" else 5672
        found.append(f"{parts.hostname or 'localhost'}:{parts.port or default}")
    return ", ".join(found)


def username(url: str) -> str:
    """The broker user of a URL, the first of a list (what RabbitMQ checks `user_id`
    against; every node of a cluster shares its users)."""
    return urlsplit(first_url(url)).username or "guest"


@contextmanager
def broker_errors(url: str, doing: str) -> Iterator[None]:
    """Turn pika and socket errors into BrokerUnavailable naming the broker and the action."""
    try:
        yield
    except pika.exceptions.ProbableAuthenticationError as exc:
        raise BrokerUnavailable(
            f"RabbitMQ at {describe(url)} refused the credentials while {doing}"
        ) from exc
    except PIKA_ERRORS as exc:
        raise BrokerUnavailable(
            f"RabbitMQ at {describe(url)} is unreachable while {doing} ({exc!r}); {HOW_TO_START}"
        ) from exc


def connect(url: str, *, doing: str = "connecting") -> pika.BlockingConnection:
    """A blocking connection to the first broker URL of `url` that answers, or
    BrokerUnavailable."""
    with broker_errors(url, doing):
        return pika.BlockingConnection(parameters(url))


@contextmanager
def blocking_channel(url: str, *, doing: str = "talking to the broker") -> Iterator[Any]:
    """A channel on a fresh blocking connection, closed on exit."""
    connection = connect(url, doing=doing)
    try:
        with broker_errors(url, doing):
            yield connection.channel()
    finally:
        close_quietly(connection)


INEQUIVALENT = re.compile(r"current is '([^']*)'")


def claim_exchange(url: str, exchange: str, holder: str, *, doing: str) -> str | None:
    """Declare `exchange` naming `holder` (its alternate-exchange argument, which RabbitMQ
    compares on every declaration): None when it names `holder` (now or already), else the
    holder it names ("" when the broker's reply, cut at 255 bytes, lost it). Atomic on the
    broker: of two holders, the first declaration wins."""
    arguments = {"alternate-exchange": holder}
    with blocking_channel(url, doing=doing) as channel:
        try:
            channel.exchange_declare(exchange, "fanout", durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            found = INEQUIVALENT.search(exc.reply_text)  # cut at 255 bytes: maybe not there
            return found.group(1) if found else ""
    return None


def close_quietly(connection: Any) -> None:
    """Close a pika connection, ignoring a connection that is already gone."""
    try:
        if connection is not None and connection.is_open:
            connection.close()
    except PIKA_ERRORS:
        log.debug("connection already closed", exc_info=True)


def reconnect_policy(
    settings: Settings,
    *,
    what: str,
    stop: threading.Event | None = None,
    give_up_after: float | None = None,
) -> tenacity.Retrying:
    """The one retry policy for broker sessions: exponential backoff, logged, until `stop`
    is set (its backoff sleeps wake up at once then) or `give_up_after` seconds passed."""
    give_up: tenacity.stop.stop_base = tenacity.stop_never
    sleep: Callable[[float], None] = time.sleep
    if stop is not None:
        give_up = tenacity.stop_when_event_set(stop)
        event = stop

        def sleep(seconds: float) -> None:  # wakes up as soon as `stop` is set
            event.wait(seconds)

    if give_up_after is not None:
        give_up = give_up | tenacity.stop_after_delay(give_up_after)
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(BrokerUnavailable),
        wait=tenacity.wait_exponential(
            multiplier=settings.retry_initial_s, max=settings.retry_max_s
        ),
        stop=give_up,
        sleep=sleep,
        before_sleep=lambda state: log.warning(
            "%s: broker unavailable (%s), retrying in %.1fs",
            what,
            state.outcome.exception() if state.outcome else "?",
            state.upcoming_sleep,
        ),
        reraise=True,
    )


def serviced_sleep(
    connection: pika.BlockingConnection, stop: threading.Event | None = None
) -> Callable[[float], None]:
    """A sleep for retry policies that keeps `connection` serviced (heartbeats go on, the
    broker does not drop a consumer that waits) and ends early once `stop` is set."""

    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not (stop and stop.is_set()):
            connection.sleep(min(left, SERVICE_S))

    return sleep


@contextmanager
def consuming(url: str, *, connecting: str, queue: str) -> Iterator[pika.BlockingConnection]:
    """A blocking connection for one consume session; errors become BrokerUnavailable."""
    connection = connect(url, doing=connecting)
    try:
        with broker_errors(url, f"consuming {queue}"):
            yield connection
    finally:
        close_quietly(connection)


def delivery(method: Any, properties: Any, body: bytes | None) -> Delivery:
    """What the consumers keep of a pika delivery."""
    headers = properties.headers if isinstance(properties.headers, dict) else {}
    return Delivery(
        delivery_tag=method.delivery_tag,
        routing_key=method.routing_key,
        body=body or b"",
        message_id=properties.message_id,
        user_id=properties.user_id,
        content_type=properties.content_type,
        headers=headers,
        reply_to=properties.reply_to,
        correlation_id=properties.correlation_id,
    )


class PikaOutbound:
    """Acks, publishes down and dead letters of one consume session.

    Receipts and replay requests go out on the consuming channel (a lost one is recovered by
    the terminal resending, which earns a duplicate receipt). Dead letters go out on a
    second channel in confirm mode, so a poison message is on `cajasync.dead` before it is
    acked. Its headers say why, where it was taken from and when (`cajasync dead` reads them).
    """

    def __init__(self, channel: BlockingChannel, dead: BlockingChannel, queue: str = "") -> None:
        self._channel = channel
        self._dead = dead
        self._queue = queue
        self._down = pika.BasicProperties(delivery_mode=PERSISTENT, content_type=CONTENT_TYPE)

    def ack(self, last_tag: int) -> None:
        self._channel.basic_ack(last_tag, multiple=True)

    def nack(self, last_tag: int) -> None:
        self._channel.basic_nack(last_tag, multiple=True, requeue=True)

    def send_down(self, routing_key: str, body: bytes) -> None:
        self._channel.basic_publish(DOWN_EXCHANGE, routing_key, body, self._down)

    def dead_letter(self, message: Delivery, reason: str) -> None:
        log.warning("dead-lettering %s (%s): %s", message.message_id, message.routing_key, reason)
        headers = {
            **message.headers,
            REASON_HEADER: reason,
            ROUTING_KEY_HEADER: message.routing_key,
            QUEUE_HEADER: self._queue,
            USER_HEADER: message.user_id or "",
            DEAD_AT_HEADER: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=message.content_type,
            message_id=message.message_id,
            headers=headers,
        )
        self._dead.basic_publish(
            DEAD_EXCHANGE, message.routing_key, message.body, properties, mandatory=True
        )


class PikaConsumeSession:
    """One blocking connection consuming one queue (`cajasync.broker.ports.ConsumeSession`)."""

    def __init__(
        self,
        connection: pika.BlockingConnection,
        queue: str,
        *,
        prefetch: int,
        declare: Callable[[Any], object],
        stop: threading.Event | None,
    ) -> None:
        self._connection = connection
        self._queue = queue
        self._channel = connection.channel()
        declare(self._channel)  # idempotent: a fresh or reset broker gets its queues back
        self._channel.basic_qos(prefetch_count=prefetch)
        dead = connection.channel()
        dead.confirm_delivery()
        self.out = PikaOutbound(self._channel, dead, queue)
        self.sleep = serviced_sleep(connection, stop)

    def deliveries(self, *, timeout: float) -> Iterator[Delivery | None]:
        for method, properties, body in self._channel.consume(
            self._queue, inactivity_timeout=timeout
        ):
            yield None if method is None else delivery(method, properties, body)

    def cancel(self) -> None:
        self._channel.cancel()

    def replies(self) -> PikaReplies:
        return PikaReplies(self._connection)


class RabbitBroker:
    """RabbitMQ at `url`, for the blocking consumers (`cajasync.broker.ports.Broker`)."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextmanager
    def consuming(
        self,
        queue: str,
        *,
        prefetch: int,
        declare: Callable[[Any], object],
        connecting: str,
        stop: threading.Event | None,
    ) -> Iterator[PikaConsumeSession]:
        with consuming(self.url, connecting=connecting, queue=queue) as connection:
            yield PikaConsumeSession(
                connection, queue, prefetch=prefetch, declare=declare, stop=stop
            )
