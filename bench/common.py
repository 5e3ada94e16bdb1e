"""Shared bench plumbing: fixtures for terminals, results table and JSON output."""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pika
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.samples.simulate import TicketMaker
from outbox.record import record
from schemas.ops import Sale

RESULTS = Path(__file__).parent / "results"
BROKER_URL = os.environ.get("CAJASYNC_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PG_URL = os.environ.get(
    "CAJASYNC_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@dataclass
class Result:
    """One benchmark: the measured figure, its baselines, the ratios and the targets."""

    name: str
    metric: str
    value: float
    baselines: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    passed: bool = True
    details: dict[str, Any] = field(default_factory=dict)


def write(result: Result) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{result.name}.json"
    data = {**asdict(result), "measured_at": dt.datetime.now(dt.UTC).isoformat()}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def sales(count: int, seed: int = 7) -> list[Sale]:
    """Realistic sale operations, built once so generation is not timed."""
    return TicketMaker(seed=seed).sales(count)


# Terminal ids a bench made in this process: their queues on the broker are deleted once
# the bench ended (`drop_terminal_queues`), so benches do not leave hundreds of tills'
# queues filling with every change on the broker (a later `cajasync queues` peeks them).
MADE: list[str] = []


def made(terminal: str) -> str:
    """Remember `terminal` for `drop_terminal_queues`."""
    MADE.append(terminal)
    return terminal


def drop_terminal_queues(broker_url: str = BROKER_URL) -> int:
    """Delete the queues of the terminals made so far in this process; how many."""
    if not MADE:
        return 0
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        for terminal in MADE:
            channel.queue_delete(topology.terminal_queue(terminal))
    finally:
        connection.close()
    count = len(MADE)
    MADE.clear()
    return count


def new_terminal(directory: Path, name: str | None = None) -> tuple[Engine, str]:
    terminal = made(name or f"B{uuid.uuid4().hex[:6].upper()}")
    engine = make_engine(str(directory / f"{terminal}.db"))
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity(terminal, "L1", "PV1", "retail"))
    return engine, terminal


def fill_outbox(engine: Engine, operations: Iterable[Sale]) -> int:
    """Record operations in one transaction (setup, not timed)."""
    count = 0
    with engine.begin() as connection:
        for op in operations:
            record(connection, op)
            count += 1
    return count


def outbox_bodies(engine: Engine) -> list[tuple[str, bytes]]:
    from cajasync.core.terminal_tables import outbox

    with engine.connect() as connection:
        return [
            (row.topic, row.body)
            for row in connection.execute(
                sa.select(outbox.c.topic, outbox.c.body).order_by(outbox.c.seq)
            )
        ]


def purge_ops(url: str = BROKER_URL) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    topology.declare_server(channel)
    channel.queue_purge(topology.OPS_QUEUE)
    connection.close()


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one benchmark, dropped afterwards."""
    name = f"cajasync_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
