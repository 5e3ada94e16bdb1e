"""Ask the server where this terminal's seqs continue, and wait for its answer.

    mark = ask_high_water(settings, identity, request, timeout=20)

Used by `terminal init` (a till set up again) and `terminal recover` (a till restored from
a backup) before anything is recorded or relayed: the terminal's queue is declared (with
its bindings), a consumer is started on it, the `HighWaterRequest` is published with a
confirm, and deliveries are read until the `HighWaterMark` with this request id arrives.
Everything else on the queue (receipts, replay requests, change events meant for the
relay) is held unacknowledged and given back to the queue when the connection closes, in
its order, for the relay to apply. Answers to an earlier, abandoned request are dropped.

A queue that already has a consumer means a `terminal run` of this id (or another till
still running with it) would take the answer: refused with what to do.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import msgspec

from cajasync.broker.links import send_request
from cajasync.broker.rabbitmq import HOW_TO_START, broker_errors, close_quietly, connect
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.topology import terminal_queue
from cajasync.errors import BrokerUnavailable, CajasyncError, NoAnswer
from cajasync.processes.terminal_init import declare_terminal_queue
from schemas.feed import HighWaterMark, HighWaterRequest

log = logging.getLogger(__name__)

POLL_S: Final = 0.2
_decoder = msgspec.msgpack.Decoder(HighWaterMark)


def ask_high_water(
    settings: Settings, identity: TerminalIdentity, request: HighWaterRequest, *, timeout: float
) -> HighWaterMark:
    """Send `request` and return the server's answer; NoAnswer when the broker cannot be
    reached or the server did not answer within `timeout` seconds."""
    doing = f"asking the server where terminal {identity.terminal} continues"
    try:
        declare_terminal_queue(identity, settings)
        connection = connect(settings.broker_url, doing=doing)
    except BrokerUnavailable as exc:
        raise NoAnswer(_why(exc)) from exc
    try:
        with broker_errors(settings.broker_url, doing):
            return _exchange(connection, settings, identity, request, timeout)
    except BrokerUnavailable as exc:
        raise NoAnswer(_why(exc)) from exc
    finally:
        close_quietly(connection)  # what was held goes back to the queue


def _why(exc: BrokerUnavailable) -> str:
    """The broker error without its advice on starting a local broker (a till's network is
    down far more often than the server's broker was never installed)."""
    return str(exc).removesuffix(f"; {HOW_TO_START}")


def _exchange(
    connection: Any,
    settings: Settings,
    identity: TerminalIdentity,
    request: HighWaterRequest,
    timeout: float,
) -> HighWaterMark:
    queue = terminal_queue(identity.terminal)
    channel = connection.channel()
    consumers = channel.queue_declare(queue, passive=True).method.consumer_count
    if consumers:
        raise CajasyncError(
            f"queue {queue} already has {consumers} consumer(s), which would take the server's "
            f"answer: stop `cajasync terminal run` of terminal {identity.terminal} (or the old "
            "till still running with this id) and try again"
        )
    channel.basic_qos(prefetch_count=0)  # hold everything until the answer shows up
    deliveries = channel.consume(queue, inactivity_timeout=POLL_S)
    send_request(settings, identity, request)
    deadline = time.monotonic() + timeout
    for method, _properties, body in deliveries:
        mark = None if method is None else _mark(body)
        if mark is not None:
            channel.basic_ack(method.delivery_tag)  # nobody else reads answers
            if mark.request_id == request.request_id:
                return mark
            log.info("dropping the answer to an abandoned request %s", mark.request_id)
        if time.monotonic() >= deadline:
            break
    raise NoAnswer(
        f"the server did not answer within {timeout:g} s (is `cajasync server run` running "
        "and reachable?)"
    )


def _mark(body: bytes) -> HighWaterMark | None:
    """A high-water answer, or None for any other message (left for the relay)."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
