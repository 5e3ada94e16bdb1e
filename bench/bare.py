"""The bare pipeline e2e is measured against: publish -> consume -> one bulk insert per batch.

No dedup, no validation, no receipts, no progress: each till's outbox bodies are published
with pipelined confirms (`baselines.raw_pipelined`, the relay's window) from their own
process, and one consumer process takes `cajasync.ops` with the ingest's prefetch and batch,
inserts each batch's (terminal, seq, body) with one statement and acks it.
"""

from __future__ import annotations

import time
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING

import pika
import sqlalchemy as sa

from bench.baselines import raw_pipelined
from bench.common import BROKER_URL
from cajasync.core import topology
from cajasync.core.db import make_engine
from cajasync.core.settings import load_settings
from cajasync.core.terminal_tables import outbox

if TYPE_CHECKING:
    from bench.procs import Gate

TABLE = "bench_bare_ops"


def create_table(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE {TABLE} (terminal text NOT NULL, seq integer NOT NULL, body bytea)"
        )
    engine.dispose()


def count(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        held = int(connection.exec_driver_sql(f"SELECT count(*) FROM {TABLE}").scalar_one())  # noqa: S608
    engine.dispose()
    return held


def publisher(path: str, start: Gate, stop: Event) -> None:
    """One till's outbox, published as its relay would (no database writes)."""
    engine = make_engine(path)
    with engine.connect() as connection:
        items = [
            (row.topic, row.body)
            for row in connection.execute(
                sa.select(outbox.c.topic, outbox.c.body).order_by(outbox.c.seq)
            )
        ]
    engine.dispose()
    terminal = path.rsplit("/", 1)[-1].removesuffix(".db")
    start.wait()
    raw_pipelined(BROKER_URL, terminal, items, load_settings().publish_window)


def consumer(url: str, start: Gate, stop: Event) -> None:
    """Consume the ops queue in batches; one INSERT ... unnest per batch, then ack it."""
    settings = load_settings()
    engine = make_engine(url)
    insert = sa.text(
        f"INSERT INTO {TABLE} SELECT unnest(CAST(:t AS text[])), unnest(CAST(:s AS int[])), "
        "unnest(CAST(:b AS bytea[]))"
    )
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=settings.prefetch)
    pending: list[tuple[int, str, int, bytes]] = []

    def on_message(ch: object, method: object, properties: object, body: bytes) -> None:
        headers = properties.headers or {}  # type: ignore[attr-defined]
        tag = method.delivery_tag  # type: ignore[attr-defined]
        pending.append((tag, headers.get("terminal", ""), headers.get("seq", 0), body))

    start.wait()
    channel.basic_consume(topology.OPS_QUEUE, on_message)
    last = time.monotonic()
    while not stop.is_set():
        connection.process_data_events(time_limit=settings.ingest_flush_s)  # type: ignore[arg-type]
        due = time.monotonic() - last >= settings.ingest_flush_s
        if len(pending) >= settings.ingest_batch or (pending and due):
            batch, pending[:] = pending[: settings.ingest_batch], pending[settings.ingest_batch :]
            with engine.begin() as db:
                db.execute(
                    insert,
                    {
                        "t": [row[1] for row in batch],
                        "s": [row[2] for row in batch],
                        "b": [row[3] for row in batch],
                    },
                )
            channel.basic_ack(batch[-1][0], multiple=True)
            last = time.monotonic()
    connection.close()
    engine.dispose()
