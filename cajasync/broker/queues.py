"""Queue depths for operators: the management API when reachable, else rabbitmqctl, else AMQP.

The age of a queue's oldest message is its head message's `timestamp` (operations,
requests and stream heads carry one): the management API and rabbitmqctl report it for
classic queues; for quorum queues (every cajasync queue) a broker on this machine is asked
with `rabbitmq-queues peek`, which reads the head without delivering it. Each peek is
an Erlang CLI start (0.5-1 s), so at most `PEEKS` queues are peeked, four at a time: the
shared ones first (operations, requests, dead letters), then the deepest tills' queues (a
vhost with 100 tills' queues holding messages took 75 s to list when each was peeked).
Otherwise, or for an empty queue, the age is unknown (None).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import msgspec
import pika.exceptions

from cajasync.broker.rabbitmq import blocking_channel, broker_errors
from cajasync.core import topology
from cajasync.core.settings import Settings, first_url, url_list


class QueueInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    ready: int
    unacked: int | None
    consumers: int
    publish_rate: float | None = None
    deliver_rate: float | None = None
    ack_rate: float | None = None
    source: str = "management"
    age_s: float | None = None  # seconds since the oldest ready message was published


_PEEKED_TIMESTAMP = re.compile(r'<<"timestamp">>\},\{<<"values">>,(\d+)\}')


def queue_overview(settings: Settings, terminals: Sequence[str] = ()) -> list[QueueInfo]:
    """Every cajasync queue with ready/unacked/consumers, and rates when the API is up."""
    for source in (_from_management, _from_rabbitmqctl):
        found = source(settings)
        if found is not None:
            return found
    return _from_amqp(settings, terminals)


def _vhost(settings: Settings) -> str:
    path = urlsplit(first_url(settings.broker_url)).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _from_management(settings: Settings) -> list[QueueInfo] | None:
    parts = urlsplit(first_url(settings.broker_url))
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    for base in url_list(settings.management_url):  # a cluster: the first node that answers
        url = f"{base.rstrip('/')}/api/queues/{quote(_vhost(settings), safe='')}"
        request = urllib.request.Request(url)  # noqa: S310 - operator-configured URL
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                queues = json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            continue
        found = [_from_api(q) for q in queues if q["name"].startswith("cajasync.")]
        return _with_ages(settings, found)
    return None


def _rate(stats: dict[str, Any], key: str) -> float | None:
    details = stats.get(f"{key}_details")
    return float(details["rate"]) if details else None


def _from_api(queue: dict[str, Any]) -> QueueInfo:
    stats = queue.get("message_stats", {})
    return QueueInfo(
        name=queue["name"],
        ready=int(queue.get("messages_ready", 0)),
        unacked=int(queue.get("messages_unacknowledged", 0)),
        consumers=int(queue.get("consumers", 0)),
        publish_rate=_rate(stats, "publish"),
        deliver_rate=_rate(stats, "deliver_get"),
        ack_rate=_rate(stats, "ack"),
        age_s=_age(queue.get("head_message_timestamp")),
    )


def _age(timestamp: object) -> float | None:
    """Seconds since `timestamp` (epoch seconds), None when there is none."""
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool) or timestamp <= 0:
        return None
    return max(0.0, round(time.time() - timestamp, 1))


PEEKS = 8  # queues whose head is peeked for its age, per listing
PEEKING_AT_ONCE = 4


def _with_ages(settings: Settings, queues: list[QueueInfo]) -> list[QueueInfo]:
    """Ages of the queues holding ready messages but no reported head timestamp, peeked
    when the broker runs on this machine (quorum queues): the shared queues first, then
    the deepest tills' queues, `PEEKS` in all."""
    if not _local(settings) or not shutil.which("rabbitmq-queues"):
        return queues
    unknown = [
        q
        for q in queues
        if q.age_s is None and q.ready > 0 and not q.name.startswith(topology.STREAM_PREFIX)
    ]  # a stream is no backlog: it keeps every change for its tills to read at their offsets
    unknown.sort(key=lambda q: (q.name.startswith(topology.TERMINAL_QUEUE_PREFIX), -q.ready))
    chosen = [q.name for q in unknown[:PEEKS]]
    if not chosen:
        return queues
    with ThreadPoolExecutor(min(PEEKING_AT_ONCE, len(chosen))) as pool:
        ages = dict(
            zip(chosen, pool.map(lambda name: _peek_age(settings, name), chosen), strict=True)
        )
    return [msgspec.structs.replace(q, age_s=ages[q.name]) if q.name in ages else q for q in queues]


def _peek_age(settings: Settings, queue: str) -> float | None:
    """The age of a quorum queue's head message, read without delivering it (the Erlang
    formatter: the JSON one fails on binary payloads)."""
    command = ["rabbitmq-queues", "peek", "-q", "--vhost", _vhost(settings), queue, "1"]
    try:
        done = subprocess.run(
            [*command, "--formatter", "erlang"], capture_output=True, text=True, timeout=10
        )
    except (subprocess.SubprocessError, OSError):
        return None
    found = _PEEKED_TIMESTAMP.search(done.stdout)
    return _age(int(found.group(1))) if found else None


def _local(settings: Settings) -> bool:
    host = urlsplit(first_url(settings.broker_url)).hostname or "localhost"
    return host in ("localhost", "127.0.0.1", "::1")


def _from_rabbitmqctl(settings: Settings) -> list[QueueInfo] | None:
    if not _local(settings) or not shutil.which("rabbitmqctl"):
        return None
    command = ["rabbitmqctl", "list_queues", "-q", "-p", _vhost(settings), "--formatter", "json"]
    command += ["name", "messages_ready", "messages_unacknowledged", "consumers"]
    command += ["head_message_timestamp"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=15, check=True)
        rows = json.loads(done.stdout or "[]")
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    found = [
        QueueInfo(
            name=row["name"],
            ready=int(row["messages_ready"]),
            unacked=int(row["messages_unacknowledged"]),
            consumers=int(row["consumers"]),
            source="rabbitmqctl",
            age_s=_age(row.get("head_message_timestamp")),
        )
        for row in rows
        if row["name"].startswith("cajasync.")
    ]
    return _with_ages(settings, found)


def _from_amqp(settings: Settings, terminals: Sequence[str]) -> list[QueueInfo]:
    names = [topology.OPS_QUEUE, topology.REQUESTS_QUEUE, topology.DEAD_QUEUE]
    names += [topology.terminal_queue(t) for t in terminals]
    found = []
    with blocking_channel(settings.broker_url, doing="reading queue depths") as channel:
        for name in names:
            info, channel = _passive(settings, channel, name)
            if info is not None:
                found.append(info)
    return found


def terminal_queue(settings: Settings, terminal: str) -> QueueInfo | None:
    """A till's queue as the broker sees it now (ready messages, consumers: a running
    `terminal run` or pull consumes it), over AMQP with the till's own user, which may
    declare its queue; None when the queue does not exist. BrokerUnavailable when the
    broker cannot be reached: one cheap round trip, for status probes."""
    name = topology.terminal_queue(terminal)
    with blocking_channel(settings.broker_url, doing=f"looking at queue {name}") as channel:
        return _passive(settings, channel, name)[0]


def _passive(settings: Settings, channel: Any, name: str) -> tuple[QueueInfo | None, Any]:
    """(the queue `name`, or None when it does not exist; the channel to go on with: a
    fresh one when the broker closed this one for the missing queue)."""
    with broker_errors(settings.broker_url, f"reading queue {name}"):
        try:
            ok = channel.queue_declare(name, passive=True).method
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            return None, channel.connection.channel()
    info = QueueInfo(
        name=name,
        ready=ok.message_count,
        unacked=None,
        consumers=ok.consumer_count,
        source="amqp",
    )
    return info, channel
