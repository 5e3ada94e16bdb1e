"""`python -m bench.ingest_profile [terminals] [per_terminal] [--profile]`: server ingest's
batch work in-process, without a broker, on a fresh PostgreSQL database: where a batch's time
goes (classify, admit, apply, Z checks, receipts), and cProfile's top functions with
`--profile`. A development tool, not a benchmark with a target.

The deliveries are what the relays publish (message_id, `seq` header, user guest), interleaved
as the ops queue holds them when every till relays at once: runs of `run` seqs per terminal.
`BATCH=20` in the environment sets the batch size (500, ingest's default, otherwise).
"""

from __future__ import annotations

import cProfile
import dataclasses
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.common import fill_outbox, fresh_pg_database, new_terminal
from cajasync.broker.ports import Delivery
from cajasync.core.db import make_engine, upgrade
from cajasync.core.settings import load_settings
from cajasync.core.terminal_tables import outbox
from cajasync.core.topology import op_routing_key
from cajasync.samples.simulate import TicketMaker
from inbox.ingest import Ingest
from inbox.registry import Lookup
from inbox.server_store.sql import SqlServerStore
from inbox.zreconcile import ZReconciler


class NullOut:
    """An Outbound that keeps count."""

    def __init__(self) -> None:
        self.sent = 0

    def ack(self, last_tag: int) -> None: ...

    def nack(self, last_tag: int) -> None: ...

    def send_down(self, routing_key: str, body: bytes) -> None:
        self.sent += 1

    def dead_letter(self, message: Delivery, reason: str) -> None: ...


def deliveries(terminals: int, per_terminal: int, run: int = 100) -> list[Delivery]:
    """Every terminal's outbox as deliveries, `run` seqs of one terminal after another."""
    per: list[list[Delivery]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(terminals):
            engine, terminal = new_terminal(Path(tmp), f"P{n:03d}")
            fill_outbox(engine, TicketMaker(seed=n).sales(per_terminal))
            with engine.connect() as connection:
                found = connection.execute(sa.select(outbox).order_by(outbox.c.seq)).all()
            engine.dispose()
            per.append(
                [
                    Delivery(
                        delivery_tag=0,
                        routing_key=op_routing_key(terminal, row.topic),
                        body=row.body,
                        message_id=f"{row.op_id}/{row.version}",
                        user_id="guest",
                        content_type="application/msgpack",
                        headers={"terminal": terminal, "seq": row.seq, "topic": row.topic},
                    )
                    for row in found
                ]
            )
    mixed: list[Delivery] = []
    for start in range(0, per_terminal, run):
        for rows in per:
            mixed.extend(rows[start : start + run])
    return [dataclasses.replace(d, delivery_tag=tag) for tag, d in enumerate(mixed, start=1)]


def ingest_all(url: str, items: list[Delivery], batch: int = 500) -> float:
    batch = int(os.environ.get("BATCH", batch))
    engine = make_engine(url)
    settings = load_settings(broker_url="amqp://unused")
    ingest = Ingest(
        SqlServerStore(engine),
        settings,
        broker=_NoBroker(),  # type: ignore[arg-type]
        closes=ZReconciler(engine, settings),
        registry=Lookup(engine, allow_shared=True),
    )
    out = NullOut()
    began, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(items), batch):
        ingest.on_batch(items[start : start + batch], out)
    elapsed = time.perf_counter() - began
    print(f"python CPU: {(time.process_time() - cpu) / len(items) * 1e6:.0f} us per operation")
    assert ingest.stats.applied == len(items), ingest.stats
    engine.dispose()
    return elapsed


class _NoBroker:
    """Ingest is built with a consumer loop it never runs here."""


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    terminals = int(args[0]) if args else 10
    per_terminal = int(args[1]) if len(args) > 1 else 2_000
    items = deliveries(terminals, per_terminal)
    with fresh_pg_database() as url:
        upgrade(make_engine(url), "server")
        if "--profile" in sys.argv:
            profiler = cProfile.Profile()
            profiler.enable()
            elapsed = ingest_all(url, items)
            profiler.disable()
            stats = pstats.Stats(profiler).sort_stats("cumulative")
            stats.print_stats(45)
        else:
            elapsed = ingest_all(url, items)
    print(f"{terminals}x{per_terminal}: {len(items) / elapsed:.0f} ops/s in-process")


if __name__ == "__main__":
    main()
