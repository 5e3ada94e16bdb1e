"""Bootstrap: 100,000 products without images, from request to all applied on the terminal.

Floor, same run: the same rows read from the server store and inserted into a bare SQLite
table (no broker, no versions, no replica bookkeeping). Target: at most 3x the floor.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from bench import down
from bench.common import Result, fresh_pg_database
from bench.procs import Fleet


def run(products: int = 100_000) -> Result:
    from cajasync.core.server_tables import catalog_records
    from cajasync.processes.pull import pull
    from cajasync.samples.seed import seed_catalog

    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as url:
        server = down.server_store(url)
        seed_catalog(server, products=products)
        floor = _floor(server, catalog_records, Path(tmp) / "floor.db")
        server.dispose()
        [(path, terminal)] = down.terminals(Path(tmp), 1, uuid.uuid4().hex[:4].upper())
        fleet = Fleet([("requests", url)])
        try:
            began = fleet.go()
            result = pull(terminal, down.settings(), ["productos"], full=True, timeout=600)
            elapsed = time.perf_counter() - began
        finally:
            fleet.close()
            down.delete_queues([path])
        applied = _count(terminal)
    ratio = elapsed / floor
    return Result(
        name="bootstrap",
        metric=f"seconds to bootstrap {products:,} products (request to applied)",
        value=round(elapsed, 2),
        baselines={"floor_read_and_bare_sqlite_insert_s": round(floor, 2)},
        ratios={"vs_floor": round(ratio, 2)},
        targets={"vs_floor": "<= 3"},
        passed=ratio <= 3 and applied == products,
        details={"products": products, "applied": applied, "bytes": getattr(result, "bytes", None)},
    )


def _floor(server: sa.Engine, table: sa.Table, path: Path) -> float:
    """Read the products from the server store and insert them into a bare SQLite table."""
    start = time.perf_counter()
    with server.connect() as connection:
        rows = connection.execute(
            sa.select(table.c.key, table.c.version, table.c.body).where(
                table.c.topic == "productos", table.c.deleted.is_(False)
            )
        ).all()
    bare = sqlite3.connect(path)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute("CREATE TABLE products (key TEXT PRIMARY KEY, version INTEGER, body BLOB)")
    with bare:
        bare.executemany("INSERT INTO products VALUES (?, ?, ?)", [tuple(r) for r in rows])
    bare.close()
    return time.perf_counter() - start


def _count(engine: sa.Engine) -> int:
    from cajasync.core.terminal_tables import replica

    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.select(sa.func.count()).where(
                    replica.c.topic == "productos", replica.c.deleted.is_(False)
                )
            ).scalar_one()
        )
