"""Fleet: N simulated tills (10, 100, 1,000), each a real AMQP identity with its own quorum
queue and bindings, reading the chain's change stream from its own offset, and its own
outbox (SQLite file), against one ingest process on PostgreSQL and the feed relay. Reports
how each figure grows with N.

Per size, in a private vhost deleted at the end (every queue with it):

* declare: every till's topology (`declare_terminal`: its queue, `t.<till>` and the 14
  change bindings of its pos and itself; the streams of its scopes once) on one connection,
  timed per till; the broker's memory before and after;
* ops: the connected tills, each running the real `run_terminal` (its own connection,
  relay, receipts, change events: no shortcut a real till would not take), many per
  process as threads in 4 processes, relay `ops` sales in all (outboxes filled before the
  clock) until every one is acked; ops/s into PostgreSQL, and receipt latency (broker
  confirm to the server's receipt at the till: `settled_at - sent_at`) p50/p99;
* propagation: with the same tills running and the feed relay, `changes` price changes
  (scope all) at `rate`/s; upsert commit to applied in each connected till's replica.

A real till has its own connection, so the benchmark keeps that. The broker here allows
`sockets_total` connections (about 0.8 x its fd limit of 1,024), shared with whoever else
uses it: at most `connected` tills are connected at once (200 by default). The others are
offline tills: their queues exist and are bound (the chain's changes no longer fill them:
the stream holds one copy for every till). At the largest size, `bench.fanout` then
compares per-till quorum and classic queues with a stream per scope (delivery to every
till).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import sqlalchemy as sa

from bench import common, cpu, fanout, fleet_broker, procs
from bench.common import (
    BROKER_URL,
    Result,
    fill_outbox,
    fresh_pg_database,
    median,
    percentile,
)
from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.terminal_tables import ACKED, outbox, replica
from cajasync.samples.simulate import TicketMaker

WORKERS = 4


def _tills(spec: str, start: procs.Gate, stop: Any) -> None:
    """One worker process: its tills' `run_terminal`, one thread (and connection) each.

    At the lowest CPU priority (nice 19, inherited by its threads): real tills run on
    their own machines, and hundreds of simulated ones on this 2-core machine otherwise
    starve the broker and the server they are measuring (300 tills at nice 0 left the
    broker's two schedulers runnable but unserved: its listen backlog filled, the
    management API and rabbitmqctl stopped answering, tills timed out connecting)."""
    import os

    from cajasync.core.settings import load_settings
    from cajasync.processes.terminal import run_terminal

    os.nice(19)

    settings = load_settings(broker_url=BROKER_URL)
    engines = [make_engine(path) for path in json.loads(spec)]
    start.wait()
    local = procs._local(stop)
    threads = [
        threading.Thread(target=run_terminal, args=(e, settings), kwargs={"stop": local})
        for e in engines
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


procs.ROLES["tills"] = _tills


def run(
    sizes: tuple[int, ...] = (10, 100, 1_000),
    ops: int = 10_000,
    connected: int = 200,
    changes: int = 40,
    rate: float = 20,
    fanout_variants: tuple[str, ...] = ("quorum", "classic", "stream"),
    servers: tuple[int, ...] = (1,),
    workers: int = WORKERS,
    fanout_changes: int = 20,
    fanout_rate: float = 2.0,
) -> Result:
    """`servers`: each size is run once per count of ingest processes (1 and 2: issue 10
    item 4); the growth ratios and the fan-out use the first count."""
    import os

    base = os.environ.get("CAJASYNC_BROKER_URL", BROKER_URL)
    allowed, used, fds = fleet_broker.sockets(base)
    rows: list[dict[str, Any]] = []
    compared: list[dict[str, Any]] = []
    for size in sizes:
        if size + min(size, connected) > fds // 2 and not os.environ.get("CAJASYNC_FLEET_FORCE"):
            # 1,000 quorum queues + 200 connections exhausted a 1,024-fd broker (it went down):
            # never again on a shared broker; CAJASYNC_FLEET_FORCE=1 on one of your own
            rows.append({"tills": size, "skipped": f"needs more than {fds // 2} broker fds"})
            continue
        for count in servers:
            with fleet_broker.private_vhost(base, str(size)) as url:
                os.environ["CAJASYNC_BROKER_URL"] = url  # the spawned tills and server read it
                try:
                    row, tills, baseline = _one_size(
                        url, size, ops, min(size, connected), changes, rate, count, workers
                    )
                    rows.append(row)
                    common.RESULTS.mkdir(exist_ok=True)  # a size's row survives a later failure
                    (common.RESULTS / "fleet-sizes.json").write_text(json.dumps(rows, indent=2))
                    if size == max(sizes) and count == servers[0] and fanout_variants:
                        compared = _compare(
                            url, tills, fanout_changes, fanout_rate, fanout_variants, baseline
                        )
                        (common.RESULTS / "fleet-fanout.json").write_text(
                            json.dumps(compared, indent=2)
                        )
                finally:
                    os.environ["CAJASYNC_BROKER_URL"] = base
    measured = [row for row in rows if "skipped" not in row and row["servers"] == servers[0]]
    first, last = measured[0], measured[-1]
    growth = last["tills"] / first["tills"]
    ratios = {
        f"{key} x{growth:g} tills": round(last[key] / first[key], 2)
        for key in ("ops_per_s", "receipt_p99_ms", "propagation_p99_ms", "declare_ms_per_till")
        if first.get(key) and last.get(key)
    }
    return Result(
        name="fleet",
        metric=f"ops/s into PostgreSQL with {last['tills']} tills ({last['connected']} connected)",
        value=last["ops_per_s"],
        ratios=ratios,
        targets={
            "ops acked": "== ops relayed",
            "changes applied": "on every connected till",
            "fan-out": "every change to every till, each variant",
        },
        passed=all(
            r["acked"] == r["ops"] and r["propagation_complete"] for r in rows if "skipped" not in r
        )
        and all(row["delivered"] == row["expected"] for row in compared),
        details={
            "broker": {
                "amqp_port": urlsplit(base).port,
                "management": fleet_broker.MANAGEMENT,
                "sockets_total": allowed,
                "sockets_used_at_start": used,
                "fd_total": fds,
            },
            "sizes": rows,
            "fanout": compared,
        },
    )


def _one_size(
    url: str,
    size: int,
    ops: int,
    connected: int,
    changes: int,
    rate: float,
    servers: int = 1,
    workers: int = WORKERS,
) -> tuple[dict[str, Any], list[str], dict[str, int]]:
    tag = uuid.uuid4().hex[:4].upper()
    names = [f"F{tag}{n:04d}" for n in range(size)]
    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as server_url:
        server = make_engine(server_url)
        upgrade(server, "server")
        paths = _outboxes(Path(tmp), names)
        baseline = fleet_broker.memory(url)
        declared = _declare(url, names)
        live = paths[:connected]
        per_till = max(1, ops // connected)
        for n, path in enumerate(live):
            engine = make_engine(path)
            fill_outbox(engine, TicketMaker(seed=n).sales(per_till))
            engine.dispose()
        idle = fleet_broker.memory(url)
        roles = [("ingest", server_url)] * servers + [("feed", server_url)]
        roles += [("tills", json.dumps(live[w::workers])) for w in range(workers)]
        fleet = procs.Fleet(roles, warmup_s=5 + connected / 100)
        parts = _parts(fleet, servers, url)
        try:
            cpu_before = {name: cpu.seconds(pids) for name, pids in parts.items()}
            began = fleet.go()
            elapsed = _wait_acked(live, per_till * len(live), began)
            parts["postgresql"] = _pg_pids()  # backends opened since count from zero
            cpu_used = {
                name: round((cpu.seconds(pids) - cpu_before.get(name, 0)) / elapsed, 2)
                for name, pids in parts.items()
            }
            with_connections = fleet_broker.memory(url)
            connections = fleet_broker.connection_count(url)
            receipts = _receipt_latencies(live)
            committed = _change_prices(server, changes, rate)
            samples = _propagation(live, committed)
        finally:
            fleet.close()
            server.dispose()
    total = per_till * len(live)
    row = {
        "tills": size,
        "connected": len(live),
        "servers": servers,
        "broker_connections_during_ops": connections,
        "cpu_s_per_wall_s": cpu_used,
        "ops": total,
        "acked": len(receipts),
        "ops_per_s": round(total / elapsed),
        "receipt_p50_ms": round(median(receipts) * 1000, 1),
        "receipt_p99_ms": round(percentile(receipts, 0.99) * 1000, 1),
        "propagation_p50_ms": round(median(samples) * 1000, 1) if samples else None,
        "propagation_p99_ms": round(percentile(samples, 0.99) * 1000, 1) if samples else None,
        "propagation_complete": len(samples) == changes * len(live),
        "memory_per_connection_bytes": round(
            (with_connections["connections"] - idle["connections"]) / len(live)
        ),
        **declared,
    }
    return row, names, baseline


def _parts(fleet: procs.Fleet, servers: int, url: str) -> dict[str, list[int]]:
    """The processes of each part, for CPU seconds per wall second during the ops phase."""
    pids = [proc.pid or 0 for proc in fleet.procs]
    broker = cpu.broker_pid(url)
    return {
        "ingest": pids[:servers],
        "feed_relay": pids[servers : servers + 1],
        "tills": pids[servers + 1 :],
        "postgresql": _pg_pids(),
        "broker": [broker] if broker else [],
    }


def _pg_pids() -> list[int]:
    """Every PostgreSQL process on the machine (shared: other users' queries count too)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _outboxes(directory: Path, names: list[str]) -> list[str]:
    """One terminal database per till: a migrated template copied (setup, not timed)."""
    template = directory / "template.db"
    engine = make_engine(str(template))
    upgrade(engine, "terminal")
    engine.dispose()
    paths = []
    for name in names:
        path = directory / f"{name}.db"
        shutil.copyfile(template, path)
        engine = make_engine(str(path))
        with engine.begin() as connection:
            save_identity(connection, TerminalIdentity(name, "L1", "PV1", "retail"))
        engine.dispose()
        paths.append(str(path))
    return paths


def _declare(url: str, names: list[str]) -> dict[str, Any]:
    """Declare every till's topology as a till does on connecting; time it, weigh it."""
    before = fleet_broker.memory(url)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    topology.declare_server(channel)
    timings = []
    for name in names:
        started = time.perf_counter()
        topology.declare_terminal(channel, name, "L1", "PV1", "retail")
        timings.append(time.perf_counter() - started)
    connection.close()
    time.sleep(2)  # let the new queues settle before weighing them
    after = fleet_broker.memory(url)
    grown = fleet_broker.delta(after, before)
    size = len(names)
    return {
        "bindings_per_till": 1 + len(topology.change_bindings("X", "L1", "PV1", "retail")),
        "declare_ms_per_till": round(median(timings) * 1000, 2),
        "declare_p99_ms": round(percentile(timings, 0.99) * 1000, 2),
        "declare_total_s": round(sum(timings), 2),
        "queue_memory_per_till_bytes": round(grown["queues"] / size),
        "node_rss_per_till_bytes": round(grown["total"] / size),
        "queue_procs_per_till_bytes": round(
            (grown["quorum_queue_procs"] + grown["queue_procs"]) / size
        ),
        "quorum_ets_per_till_bytes": round(grown["quorum_ets"] / size),
        "broker_memory_mb": round(after["total"] / 2**20, 1),
    }


def _count_acked(path: str) -> int:
    engine = make_engine(path)
    with engine.connect() as connection:
        query = sa.select(sa.func.count()).where(outbox.c.state == ACKED)
        count = int(connection.execute(query).scalar_one())
    engine.dispose()
    return count


def _wait_acked(paths: list[str], total: int, began: float, timeout: float = 1200) -> float:
    pending = list(paths)
    while time.perf_counter() - began < timeout:
        pending = [path for path in pending if _count_acked(path) < total // len(paths)]
        if not pending:
            return time.perf_counter() - began
        time.sleep(0.2)
    raise RuntimeError(f"{len(pending)} tills still not fully acked after {timeout}s")


def _receipt_latencies(paths: list[str]) -> list[float]:
    latencies: list[float] = []
    for path in paths:
        engine = make_engine(path)
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(outbox.c.sent_at, outbox.c.settled_at).where(outbox.c.state == ACKED)
            ).all()
        engine.dispose()
        latencies += [row.settled_at - row.sent_at for row in rows]
    return latencies


def _change_prices(server: sa.Engine, changes: int, rate: float) -> dict[str, tuple[int, float]]:
    """Upsert `changes` products (scope all) at `rate`/s; key -> (version, commit time)."""
    from outbox import catalog
    from schemas.records import Product

    committed: dict[str, tuple[int, float]] = {}
    start = time.perf_counter()
    for index in range(changes):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        product = Product(
            key=f"77900{index:08d}",
            name=f"Producto {index}",
            price=Decimal("100.00") + index,
            tax_rate=Decimal("21"),
        )
        with server.begin() as connection:
            change = catalog.upsert(connection, product)
        committed[product.key] = (change.version, time.time())
    return committed


def _propagation(
    paths: list[str], committed: dict[str, tuple[int, float]], timeout: float = 300
) -> list[float]:
    deadline = time.monotonic() + timeout
    samples: list[float] = []
    for path in paths:
        engine = make_engine(path)
        while True:
            with engine.connect() as connection:
                rows = connection.execute(
                    sa.select(replica.c.key, replica.c.version, replica.c.applied_at).where(
                        replica.c.topic == "productos", replica.c.key.in_(list(committed))
                    )
                ).all()
            fresh = [r for r in rows if r.version >= committed[r.key][0]]
            if len(fresh) == len(committed) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        engine.dispose()
        samples += [r.applied_at - committed[r.key][1] for r in fresh]
    return samples


def _compare(
    url: str,
    tills: list[str],
    changes: int,
    rate: float,
    variants: tuple[str, ...],
    baseline: dict[str, int],
) -> list[dict[str, Any]]:
    vhost = url.rsplit("/", 1)[1]
    with tempfile.TemporaryDirectory() as tmp:
        return [
            fanout.measure(url, vhost, name, tills, changes, rate, Path(tmp), baseline=baseline)
            for name in variants
        ]
