"""Fan-out of a change (scope all) to N tills, three ways, read by bench-local consumers.

* `quorum`: the design before the streams, one quorum queue per till (the queues
  `declare_terminal` makes) bound also to the shared scopes' keys (`shared_scope_keys`,
  what `server init --migrate-fanout` unbinds): 16 + 12 bindings per till;
* `classic`: the same queues and bindings, classic (single node, not replicated);
* `stream`: one stream per change scope (here the `all` scope's), every till a consumer of
  it with its own offset (`x-stream-offset`), over AMQP 0-9-1: cajasync's design now.

A reader process holds one connection and one channel per till, as many tills as it is
given; every delivery is timed against the publish time in its `t` header and acked. The
publisher sends `changes` messages of a change event's size at `rate`/s with confirms.

The rate must stay below what the 4 Python readers can take on this machine (about 5,000
deliveries/s in all): 20 changes/s to 1,000 tills is 20,000 deliveries/s, and then every
variant measures the readers' queue (p50 4-6 s for all three), not the broker. Real tills
each take one delivery per change on their own machine. `python -m bench fanout` runs the
comparison alone: 1,000 tills' quorum queues declared as `declare_terminal` does, then each
variant at 2 changes/s.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pika

from bench import common, fleet_broker
from bench.common import BROKER_URL, Result, median, percentile
from cajasync.core import topology

BODY = bytes(420)  # a price change event encoded is about this size
STREAM = "cajasync.bench.stream.all"


@dataclass
class Variant:
    name: str
    exchange: str
    queues: list[str]
    stream: bool = False


def declare(channel: Any, name: str, tills: list[str]) -> tuple[Variant, float]:
    """Declare a variant's queues for `tills`; (the variant, seconds per till)."""
    started = time.perf_counter()
    if name == "quorum":  # declared by the fleet (declare_terminal): bind the shared scopes
        queues = [topology.terminal_queue(t) for t in tills]
        for queue in queues:
            channel.queue_purge(queue)
            for key in topology.shared_scope_keys("L1"):
                channel.queue_bind(queue, topology.DOWN_EXCHANGE, routing_key=key)
        seconds = (time.perf_counter() - started) / len(tills)
        return Variant(name, topology.DOWN_EXCHANGE, queues), seconds
    exchange = f"cajasync.bench.down.{name}"
    channel.exchange_declare(exchange, "topic", durable=True)
    if name == "stream":
        channel.queue_declare(STREAM, durable=True, arguments={"x-queue-type": "stream"})
        channel.queue_bind(STREAM, exchange, routing_key="chg.*.all")
        return Variant(name, exchange, [STREAM] * len(tills), stream=True), 0.0
    queues = []
    for till in tills:
        queue = f"cajasync.bench.c.{till}"
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
        channel.queue_bind(queue, exchange, routing_key=topology.terminal_routing_key(till))
        for key in topology.change_bindings(till, "L1", "PV1", "retail"):
            channel.queue_bind(queue, exchange, routing_key=key)
        for key in topology.shared_scope_keys("L1"):
            channel.queue_bind(queue, exchange, routing_key=key)
        queues.append(queue)
    return Variant(name, exchange, queues), (time.perf_counter() - started) / len(tills)


def _reader(
    url: str,
    queues: list[str],
    stream: bool,
    out: str,
    ready: Event,
    stop: Event,
    seen: Synchronized,  # type: ignore[type-arg]
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    samples: list[float] = []

    def consume(queue: str) -> None:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=100)

        def on_message(ch: Any, method: Any, properties: Any, _body: bytes) -> None:
            samples.append(time.time() - float(properties.headers["t"]))
            ch.basic_ack(method.delivery_tag)
            with seen.get_lock():
                seen.value += 1

        arguments = {"x-stream-offset": "next"} if stream else None
        channel.basic_consume(queue, on_message, arguments=arguments)

    for queue in queues:
        consume(queue)
    ready.set()
    while not stop.is_set():
        connection.process_data_events(time_limit=1)
    connection.close()
    Path(out).write_text(json.dumps(samples))


def publish(url: str, exchange: str, changes: int, rate: float) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    start = time.perf_counter()
    for index in range(changes):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        properties = pika.BasicProperties(delivery_mode=2, headers={"t": repr(time.time())})
        channel.basic_publish(exchange, "chg.productos.all", BODY, properties)
    connection.close()


def measure(
    url: str,
    vhost: str,
    name: str,
    tills: list[str],
    changes: int,
    rate: float,
    tmp: Path,
    *,
    baseline: dict[str, int],
) -> dict[str, Any]:
    """Declare variant `name` for `tills`, read it with 4 reader processes, publish, time.
    `baseline`: the broker's memory before the fleet's own quorum queues were declared."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    before = baseline if name == "quorum" else fleet_broker.memory(url)
    variant, declare_s = declare(connection.channel(), name, tills)
    connection.close()
    time.sleep(2)
    declared = fleet_broker.memory(url)
    ctx = mp.get_context("spawn")
    stop, seen = ctx.Event(), ctx.Value("q", 0)
    readers, outs, readies = [], [], []
    for n in range(4):
        out = str(tmp / f"{name}-{n}.json")
        ready = ctx.Event()
        args = (url, variant.queues[n::4], variant.stream, out, ready, stop, seen)
        readers.append(ctx.Process(target=_reader, args=args, daemon=True))
        outs.append(out)
        readies.append(ready)
    for proc in readers:
        proc.start()
    for ready in readies:
        ready.wait(300)
    time.sleep(1)
    expected = changes * len(tills)
    publish(url, variant.exchange, changes, rate)
    deadline = time.monotonic() + 120
    while seen.value < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    during = fleet_broker.memory(url)
    stop.set()
    for proc in readers:
        proc.join(60)
    samples = [s for out in outs for s in json.loads(Path(out).read_text())]
    backlog = _backlog(url, vhost, variant, changes)
    return {
        "variant": name,
        "delivered": len(samples),
        "expected": expected,
        "p50_ms": round(median(samples) * 1000, 1) if samples else None,
        "p99_ms": round(percentile(samples, 0.99) * 1000, 1) if samples else None,
        "declare_ms_per_till": round(declare_s * 1000, 2),
        "queue_memory_per_till_bytes": round((declared["queues"] - before["queues"]) / len(tills)),
        "queue_memory_per_till_after_bytes": round(
            (during["queues"] - before["queues"]) / len(tills)
        ),
        "consumer_memory_per_till_bytes": round(
            (during["connections"] - declared["connections"]) / len(tills)
        ),
        "node_rss_per_till_bytes": round((during["total"] - before["total"]) / len(tills)),
        **backlog,
    }


def _backlog(url: str, vhost: str, variant: Variant, changes: int) -> dict[str, Any]:
    """Memory of `changes` more messages held for tills that are all offline."""
    prefix = STREAM if variant.stream else variant.queues[0].rsplit(".", 1)[0]
    before = fleet_broker.queue_memory(url, vhost, prefix)
    node_before = fleet_broker.memory(url)["total"]
    publish(url, variant.exchange, changes, rate=1000)
    time.sleep(3)
    held = fleet_broker.queue_memory(url, vhost, prefix) - before
    node_held = fleet_broker.memory(url)["total"] - node_before
    copies = changes * (1 if variant.stream else len(variant.queues))
    return {
        "backlog_messages": copies,
        "backlog_queue_bytes_per_message": round(held / copies, 1),
        "backlog_node_bytes_per_message": round(node_held / copies, 1),
    }


def run(
    tills: int = 1_000,
    changes: int = 20,
    rate: float = 2.0,
    variants: tuple[str, ...] = ("quorum", "classic", "stream"),
) -> Result:
    """Fan-out alone, in a private vhost: `tills` quorum queues with their bindings (as
    `declare_terminal` declares them), then each variant read by bench-local consumers."""
    base = os.environ.get("CAJASYNC_BROKER_URL", BROKER_URL)
    names = [f"X{uuid.uuid4().hex[:4].upper()}{n:04d}" for n in range(tills)]
    with fleet_broker.private_vhost(base, f"fanout{tills}") as url:
        baseline = fleet_broker.memory(url)
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        topology.declare_server(channel)
        started = time.perf_counter()
        for name in names:
            topology.declare_terminal(channel, name, "L1", "PV1", "retail")
        declared_s = time.perf_counter() - started
        connection.close()
        vhost = url.rsplit("/", 1)[1]
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in variants:
                rows.append(
                    measure(url, vhost, name, names, changes, rate, Path(tmp), baseline=baseline)
                )
                common.RESULTS.mkdir(exist_ok=True)  # a variant's row survives a later failure
                (common.RESULTS / "fanout-rows.json").write_text(json.dumps(rows, indent=2))
    by_name = {row["variant"]: row for row in rows}
    quorum = by_name.get("quorum", {})
    ratios = {
        f"{name} p99 / quorum p99": round(row["p99_ms"] / quorum["p99_ms"], 2)
        for name, row in by_name.items()
        if name != "quorum" and quorum.get("p99_ms") and row.get("p99_ms")
    }
    return Result(
        name="fanout",
        metric=f"change propagation p99 to {tills} tills, per-till quorum queues (ms)",
        value=quorum.get("p99_ms") or 0,
        ratios=ratios,
        targets={"delivered": "every change to every till, each variant"},
        passed=all(row["delivered"] == row["expected"] for row in rows),
        details={
            "tills": tills,
            "changes": changes,
            "rate": rate,
            "quorum_declare_ms_per_till": round(declared_s / tills * 1000, 2),
            "variants": rows,
        },
    )
