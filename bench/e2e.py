"""End to end: 10 terminals x 2,000 operations until the server (PostgreSQL) applied all and
every terminal holds its receipts. Target: ≥ 3,000 operations/s on a 2-core machine.

Each terminal relay and the server ingest run in their own processes, as in a store; the
outboxes are filled before the clock starts, and the clock stops when every outbox row is
acked. The baseline in the same run is the same operations inserted straight into the
PostgreSQL server store with one bulk statement per terminal (no broker, no dedup).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.common import Result, fill_outbox, fresh_pg_database, new_terminal, purge_ops
from bench.procs import Fleet
from cajasync.core.db import make_engine, upgrade
from cajasync.core.terminal_tables import ACKED, outbox
from cajasync.samples.simulate import TicketMaker


def run(terminals: int = 10, per_terminal: int = 2_000) -> Result:
    total = terminals * per_terminal
    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as server_url:
        upgrade(make_engine(server_url), "server")
        paths = []
        for n in range(terminals):
            engine, _ = new_terminal(Path(tmp))
            fill_outbox(engine, TicketMaker(seed=n).sales(per_terminal))
            paths.append(str(engine.url.database))
            engine.dispose()
        purge_ops()
        fleet = Fleet([("ingest", server_url)] + [("terminal", p) for p in paths])
        try:
            elapsed = _wait_all_acked(paths, total, fleet.go())
        finally:
            fleet.close()
        applied = _applied(server_url)
    rate = total / elapsed
    return Result(
        name="e2e",
        metric="operations/s, recorded outbox to receipts on 10 terminals (server on PostgreSQL)",
        value=round(rate),
        targets={"operations_per_s": ">= 3000"},
        passed=rate >= 3000 and applied == total,
        details={
            "terminals": terminals,
            "per_terminal": per_terminal,
            "seconds": round(elapsed, 2),
            "applied_on_server": applied,
        },
    )


def _wait_all_acked(paths: list[str], total: int, began: float, timeout: float = 300) -> float:
    engines = [make_engine(p) for p in paths]
    while time.perf_counter() - began < timeout:
        acked = 0
        for engine in engines:
            with engine.connect() as connection:
                acked += connection.execute(
                    sa.select(sa.func.count()).where(outbox.c.state == ACKED)
                ).scalar_one()
        if acked >= total:
            return time.perf_counter() - began
        time.sleep(0.1)
    raise RuntimeError(f"only {acked} of {total} operations acked after {timeout}s")


def _applied(url: str) -> int:
    from cajasync.core.server_tables import operations

    engine = make_engine(url)
    with engine.connect() as connection:
        count = int(
            connection.execute(sa.select(sa.func.count()).select_from(operations)).scalar_one()
        )
    engine.dispose()
    return count
