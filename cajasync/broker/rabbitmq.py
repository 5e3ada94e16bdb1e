"""The pika adapter: connection parameters, error mapping and the reconnect policy.

pika's exceptions stop here; callers see BrokerUnavailable with where and what to do.
A message field pika cannot decode becomes a marker before it can drop a connection
(`cajasync.broker.pika_fields`, installed by `parameters`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import urlsplit

import pika
import pika.exceptions
import tenacity

from cajasync.broker import pika_fields
from cajasync.core.settings import Settings
from cajasync.errors import BrokerUnavailable

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


def parameters(url: str, *, heartbeat: int = 30) -> pika.URLParameters:
    """Connection parameters for `url`, with a heartbeat and short connect timeouts.

    Every cajasync connection starts here, so this is where pika's field decoding is
    guarded (`cajasync.broker.pika_fields`): a header pika cannot decode must not drop a consumer.
    """
    pika_fields.install()
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 60
    params.socket_timeout = 5
    params.connection_attempts = 1
    return params


def describe(url: str) -> str:
    """`host:port` of a broker URL, without credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


def username(url: str) -> str:
    """The broker user of a URL (what RabbitMQ checks `user_id` against)."""
    return urlsplit(url).username or "guest"


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
    """A blocking connection, or BrokerUnavailable."""
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
