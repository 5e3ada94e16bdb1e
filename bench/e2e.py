"""End to end: 10 terminals x 2,000 operations until the server (PostgreSQL) applied all and
every terminal holds its receipts. Target: ≥ 3,000 operations/s on a 2-core machine.

Each terminal relay and the server ingest run in their own processes, as in a store; the
outboxes are filled before the clock starts, and the clock stops when every outbox row is
acked. The baseline in the same run is the same operations inserted straight into the
PostgreSQL server store with one bulk statement per terminal (no broker, no dedup).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
import uuid
from multiprocessing.synchronize import Event
from pathlib import Path

import sqlalchemy as sa

from bench.common import BROKER_URL, PG_URL, Result, fill_outbox, new_terminal, purge_ops
from cajasync.db import make_engine, upgrade
from cajasync.settings import load_settings
from outbox.simulate import TicketMaker
from outbox.tables import ACKED, outbox


def _server(url: str, start: Event, stop: Event) -> None:
    from inbox.server import run_server

    start.wait()
    run_server(make_engine(url), load_settings(broker_url=BROKER_URL), stop=stop)


def _terminal(path: str, start: Event, stop: Event) -> None:
    from outbox.relay import run_terminal

    engine = make_engine(path)
    start.wait()
    run_terminal(engine, load_settings(broker_url=BROKER_URL), stop=stop)


def run(terminals: int = 10, per_terminal: int = 2_000) -> Result:
    total = terminals * per_terminal
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, _fresh_pg_database() as server_url:
        upgrade(make_engine(server_url), "server")
        paths = []
        for n in range(terminals):
            engine, _ = new_terminal(Path(tmp))
            fill_outbox(engine, TicketMaker(seed=n).sales(per_terminal))
            paths.append(str(engine.url.database))
            engine.dispose()
        purge_ops()
        start, stop = ctx.Event(), ctx.Event()
        procs = [ctx.Process(target=_server, args=(server_url, start, stop))]
        procs += [ctx.Process(target=_terminal, args=(p, start, stop)) for p in paths]
        for proc in procs:
            proc.start()
        time.sleep(3)  # let every process import and open its databases before the clock
        began = time.perf_counter()
        start.set()
        elapsed = _wait_all_acked(paths, total, began)
        stop.set()
        for proc in procs:
            proc.join(timeout=30)
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
    from inbox.store.tables import operations

    engine = make_engine(url)
    with engine.connect() as connection:
        count = int(
            connection.execute(sa.select(sa.func.count()).select_from(operations)).scalar_one()
        )
    engine.dispose()
    return count


class _fresh_pg_database:  # noqa: N801 - used as a context manager
    def __enter__(self) -> str:
        self.name = f"cajasync_bench_{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        return f"{PG_URL.rsplit('/', 1)[0]}/{self.name}"

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.dispose()
