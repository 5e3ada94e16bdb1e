"""The fleet benchmark's broker side: a private vhost per size, memory read from the
management API, and the broker's socket limit (how many tills can hold a connection).

Everything goes through the management API at `CAJASYNC_MANAGEMENT_URL` (the first URL of
a list), i.e. the node under test: a private node (`.ci/cluster start --nodes 1 ...`, see
docs/design-scale.md), never `rabbitmqctl`, which talks to the machine's own broker."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_MANAGEMENT_URLS = os.environ.get("CAJASYNC_MANAGEMENT_URL", "http://127.0.0.1:15672")
MANAGEMENT = _MANAGEMENT_URLS.replace(" ", ",").split(",")[0]
MEMORY_KEYS = ("quorum_queue_procs", "queue_procs", "stream_queue_procs", "quorum_ets", "binary")
CONNECTION_KEYS = (
    "connection_readers",
    "connection_writers",
    "connection_channels",
    "connection_other",
)


def _get(path: str, url: str) -> Any:
    """GET the management API; with 1,000 quorum queues on a loaded 2-core machine the
    memory breakdown takes tens of seconds, so wait long and ask twice."""
    try:
        return _call("GET", path, url)
    except OSError:
        time.sleep(5)
        return _call("GET", path, url)


def _call(method: str, path: str, url: str, body: Any = None, timeout: float = 180) -> Any:
    parts = urlsplit(url)
    user, password = parts.username or "guest", parts.password or "guest"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (local API)
        f"{MANAGEMENT}/api/{path}", data=data, method=method
    )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (local API)
        text = response.read()
    return json.loads(text) if text else None


def node(url: str) -> dict[str, Any]:
    return dict(_get("nodes", url)[0])


def memory(url: str) -> dict[str, int]:
    """The node's memory: `total` (what RabbitMQ counts against its watermark) and the
    breakdown categories the fleet grows (queue processes, quorum ETS, connections)."""
    info = node(url)
    name = urllib.parse.quote(info["name"], safe="")
    try:
        breakdown = _get(f"nodes/{name}/memory", url)["memory"]
    except OSError:  # the breakdown gave up under 1,000 quorum queues: the total only
        breakdown = {"total": {"rss": info["mem_used"]}}
    picked = {key: int(breakdown.get(key, 0)) for key in (*MEMORY_KEYS, *CONNECTION_KEYS)}
    picked["connections"] = sum(picked[key] for key in CONNECTION_KEYS)
    queues = ("quorum_queue_procs", "queue_procs", "stream_queue_procs", "quorum_ets")
    picked["queues"] = sum(picked[key] for key in queues)
    picked["total"] = int(breakdown["total"]["rss"])
    return picked


def queue_memory(url: str, vhost: str, prefix: str = "") -> int:
    """Sum of the queue processes' own memory (management `memory`) in `vhost`."""
    quoted = urllib.parse.quote(vhost, safe="")
    rows = _get(f"queues/{quoted}?columns=name,memory", url)
    return sum(int(row.get("memory") or 0) for row in rows if row["name"].startswith(prefix))


def sockets(url: str) -> tuple[int, int, int]:
    """(sockets the broker allows, sockets in use, its file descriptor limit)."""
    info = node(url)
    return int(info["sockets_total"]), int(info["sockets_used"]), int(info["fd_total"])


def connection_count(url: str) -> int:
    """Client connections open on the node now (every vhost)."""
    return int(_get("overview", url)["object_totals"]["connections"])


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


@contextmanager
def private_vhost(base_url: str, tag: str) -> Iterator[str]:
    """A new vhost for one size, deleted (with every queue in it) however the run ends."""
    vhost = f"cajasync-bench-fleet-{tag}-{time.strftime('%H%M%S')}"
    quoted = urllib.parse.quote(vhost, safe="")
    user = urlsplit(base_url).username or "guest"
    _call("PUT", f"vhosts/{quoted}", base_url, {})
    try:
        grant = {"configure": ".*", "write": ".*", "read": ".*"}
        _call("PUT", f"permissions/{quoted}/{urllib.parse.quote(user, safe='')}", base_url, grant)
        yield urlunsplit(urlsplit(base_url)._replace(path="/" + vhost))
    finally:
        # 1,000 quorum queues take minutes to delete on a loaded machine: wait for it
        _call("DELETE", f"vhosts/{quoted}", base_url, timeout=900)
