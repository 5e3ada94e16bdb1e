"""Propagation: time from a catalog upsert (committed) to applied on 20 terminals, at 200/s.

Target: median under 200 ms. The feed relay and every terminal run in their own processes;
each change is a price change of a different product, so each (terminal, product) pair
gives one latency sample: the replica's applied_at minus the upsert's commit time.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import msgspec
import sqlalchemy as sa

from bench import down
from bench.common import Result, fresh_pg_database, median, percentile
from bench.procs import Fleet


def run(terminals: int = 20, rate: int = 200, seconds: float = 10.0) -> Result:
    from cajasync.samples.seed import seed_catalog

    changes = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as url:
        server = down.server_store(url)
        seed_catalog(server, products=changes)
        terminal_dbs = down.terminals(Path(tmp), terminals, uuid.uuid4().hex[:4].upper())
        paths = [path for path, _ in terminal_dbs]
        fleet = Fleet([("feed", url)] + [("terminal", p) for p in paths], warmup_s=5)
        try:
            fleet.go()
            time.sleep(3)  # the seed's own change log is published and applied first
            committed = _change_steadily(server, changes, rate)
            samples = _wait_and_measure(terminal_dbs, committed)
        finally:
            fleet.close()
            down.delete_queues(paths)
            server.dispose()
    mid, p99 = median(samples) * 1000, percentile(samples, 0.99) * 1000
    return Result(
        name="propagation",
        metric=f"median ms from upsert to applied on {terminals} terminals at {rate}/s",
        value=round(mid, 1),
        targets={"median_ms": "< 200"},
        passed=mid < 200 and len(samples) == changes * terminals,
        details={
            "p99_ms": round(p99, 1),
            "samples": len(samples),
            "expected_samples": changes * terminals,
            "changes": changes,
        },
    )


def _change_steadily(server: sa.Engine, changes: int, rate: int) -> dict[str, tuple[int, float]]:
    """Upsert one product price per tick at `rate`/s; key -> (version, commit time)."""
    from cajasync.core.server_tables import catalog_records
    from outbox import catalog
    from schemas.records import Product

    with server.connect() as connection:
        rows = connection.execute(
            sa.select(catalog_records.c.key, catalog_records.c.body)
            .where(catalog_records.c.topic == "productos")
            .order_by(catalog_records.c.key)
            .limit(changes)
        ).all()
    products = [msgspec.msgpack.decode(row.body, type=Product) for row in rows]
    committed: dict[str, tuple[int, float]] = {}
    start = time.perf_counter()
    for index, product in enumerate(products):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with server.begin() as connection:
            change = catalog.upsert(
                connection, msgspec.structs.replace(product, price=product.price + Decimal("1.00"))
            )
        committed[product.key] = (change.version, time.time())
    return committed


def _wait_and_measure(
    terminal_dbs: list[tuple[str, sa.Engine]],
    committed: dict[str, tuple[int, float]],
    timeout: float = 120,
) -> list[float]:
    from cajasync.core.terminal_tables import replica

    deadline = time.monotonic() + timeout
    samples: list[float] = []
    for _path, engine in terminal_dbs:
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
            time.sleep(0.5)
        samples += [r.applied_at - committed[r.key][1] for r in fresh]
    return samples
