"""End to end: terminals relaying into server ingest on PostgreSQL until every operation is
applied and every terminal holds its receipts, each terminal relay and each ingest process in
its own process, as in a store. Outboxes are filled before the clock starts; the clock stops
when every outbox row is acked.

Measured in the same run, 20,000 operations each time:

* `bare`: the pipeline without cajasync's work, the baseline (bench/bare.py: publish ->
  consume -> one bulk insert per batch; no dedup, no validation, no receipts);
* 10 x 2,000 with one ingest process (the headline figure, target >= 0.5x bare), and with
  two competing on `cajasync.ops` (target >= 6,000 operations/s on a 2-core machine);
* 20 x 1,000 with one ingest process: adding tills must not cost (target >= 0.9x 10 x 2,000);
* steady: operations recorded at a fixed rate (2,000/s over the terminals, for 30 s) while
  the relays run, as a busy store records them; record -> receipt latency p50/p99 from each
  outbox row's recorded_at and settled_at (the receipt's arrival).

Where the time goes is the CPU seconds each side used during the run (bench/cpu.py): the
ingest processes, the terminal relays, the database backends of the run's database, and
the broker node (shared with whatever else the machine runs).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import bare, cpu
from bench.common import (
    Result,
    fill_outbox,
    fresh_pg_database,
    new_terminal,
    percentile,
    purge_ops,
)
from bench.procs import Fleet
from cajasync.core.db import make_engine, upgrade
from cajasync.core.terminal_tables import ACKED, outbox
from cajasync.samples.simulate import TicketMaker

Figures = dict[str, Any]


def run(
    terminals: int = 10,
    per_terminal: int = 2_000,
    wide: int = 20,
    steady_rate: int = 2_000,
    steady_s: float = 30.0,
) -> Result:
    total = terminals * per_terminal
    base = _bare(terminals, per_terminal)
    one = _throughput(terminals, per_terminal, ingests=1)
    spread = _throughput(wide, total // wide, ingests=1)
    two = _throughput(terminals, per_terminal, ingests=2)
    steady = _steady(terminals, steady_rate, steady_s)
    rate = one["ops_per_s"]
    ratios = {
        "vs_bare": round(rate / base["ops_per_s"], 2),
        f"{wide}_vs_{terminals}_terminals": round(spread["ops_per_s"] / rate, 2),
        "two_ingests_vs_one": round(two["ops_per_s"] / rate, 2),
    }
    applied_all = all(f["applied_on_server"] == f["operations"] for f in (one, spread, two))
    return Result(
        name="e2e",
        metric=(
            f"operations/s, recorded outbox to receipts on {terminals} terminals x "
            f"{per_terminal:,}, one ingest process (server on PostgreSQL)"
        ),
        value=rate,
        baselines={"bare_pipeline_ops_per_s": base["ops_per_s"]},
        ratios=ratios,
        targets={
            "vs_bare": ">= 0.5",
            f"{wide}_vs_{terminals}_terminals": ">= 0.9",
            "two_ingests_ops_per_s": ">= 6000",
        },
        passed=(
            applied_all
            and ratios["vs_bare"] >= 0.5
            and ratios[f"{wide}_vs_{terminals}_terminals"] >= 0.9
            and two["ops_per_s"] >= 6000
            and steady["acked"] == steady["recorded"]
        ),
        details={
            "bare": base,
            f"{terminals}x{per_terminal}_1_ingest": one,
            f"{wide}x{total // wide}_1_ingest": spread,
            f"{terminals}x{per_terminal}_2_ingests": two,
            "steady": steady,
        },
    )


def _terminal_dbs(directory: Path, terminals: int, per_terminal: int) -> list[str]:
    paths = []
    for n in range(terminals):
        engine, _ = new_terminal(directory)
        if per_terminal:
            fill_outbox(engine, TicketMaker(seed=n).sales(per_terminal))
        paths.append(str(engine.url.database))
        engine.dispose()
    return paths


def _throughput(terminals: int, per_terminal: int, *, ingests: int) -> Figures:
    total = terminals * per_terminal
    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as server_url:
        upgrade(make_engine(server_url), "server")
        paths = _terminal_dbs(Path(tmp), terminals, per_terminal)
        purge_ops()
        fleet = Fleet([("ingest", server_url)] * ingests + [("terminal", p) for p in paths])
        clock = _Clock(fleet, ingests)
        try:
            elapsed = _wait_all_acked(paths, total, clock.start(server_url))
            where = clock.stop(server_url)
        finally:
            fleet.close()
        applied = _applied(server_url)
    return {
        "terminals": terminals,
        "per_terminal": per_terminal,
        "ingest_processes": ingests,
        "operations": total,
        "ops_per_s": round(total / elapsed),
        "seconds": round(elapsed, 2),
        "applied_on_server": applied,
        "cpu_s": where,
    }


def _bare(terminals: int, per_terminal: int) -> Figures:
    total = terminals * per_terminal
    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as server_url:
        bare.create_table(server_url)
        paths = _terminal_dbs(Path(tmp), terminals, per_terminal)
        purge_ops()
        fleet = Fleet([("bare_consumer", server_url)] + [("bare_publisher", p) for p in paths])
        clock = _Clock(fleet, 1)
        try:
            began = clock.start(server_url)
            while (held := bare.count(server_url)) < total:
                if time.perf_counter() - began > 300:
                    raise RuntimeError(f"bare pipeline: only {held} of {total} inserted")
                time.sleep(0.05)
            elapsed = time.perf_counter() - began
            where = clock.stop(server_url)
        finally:
            fleet.close()
    return {
        "operations": total,
        "ops_per_s": round(total / elapsed),
        "seconds": round(elapsed, 2),
        "cpu_s": where,
    }


def _steady(terminals: int, rate: int, seconds: float) -> Figures:
    """Record `rate` operations/s over the terminals for `seconds` while they relay."""
    count = int(rate * seconds)
    per_terminal = count // terminals
    tick = 0.02  # each terminal records its share of a tick in one transaction
    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as server_url:
        upgrade(make_engine(server_url), "server")
        paths = _terminal_dbs(Path(tmp), terminals, 0)
        sales = [TicketMaker(seed=n).sales(per_terminal) for n in range(terminals)]
        purge_ops()
        fleet = Fleet([("ingest", server_url)] + [("terminal", p) for p in paths])
        clock = _Clock(fleet, 1)
        try:
            began = clock.start(server_url)
            recorded = _record_steadily(paths, sales, rate, tick)
            lagged = time.perf_counter() - began - seconds
            _wait_all_acked(paths, recorded, began)
            where = clock.stop(server_url)
        finally:
            fleet.close()
        latencies = _latencies(paths)
    return {
        "terminals": terminals,
        "rate_per_s": rate,
        "seconds": seconds,
        "recorded": recorded,
        "acked": len(latencies),
        "recording_fell_behind_s": round(max(0.0, lagged), 2),
        "record_to_receipt_ms_p50": round(percentile(latencies, 0.50) * 1000, 1),
        "record_to_receipt_ms_p99": round(percentile(latencies, 0.99) * 1000, 1),
        "record_to_receipt_ms_max": round(max(latencies) * 1000, 1),
        "cpu_s": where,
    }


def _record_steadily(paths: list[str], sales: list[list[Any]], rate: int, tick: float) -> int:
    from cajasync.core.db import pos_engine
    from outbox.record import record

    engines = [pos_engine(path) for path in paths]
    share = max(1, round(rate * tick / len(paths)))
    start, recorded, step = time.perf_counter(), 0, 0
    cursors = [0] * len(paths)
    while any(cursor < len(s) for cursor, s in zip(cursors, sales, strict=True)):
        delay = start + step * tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for index, engine in enumerate(engines):
            batch = sales[index][cursors[index] : cursors[index] + share]
            if batch:
                with engine.begin() as connection:
                    for sale in batch:
                        record(connection, sale)
                cursors[index] += len(batch)
                recorded += len(batch)
        step += 1
    for engine in engines:
        engine.dispose()
    return recorded


def _latencies(paths: list[str]) -> list[float]:
    samples: list[float] = []
    for path in paths:
        engine = make_engine(path)
        with engine.connect() as connection:
            for recorded_at, settled_at in connection.execute(
                sa.select(outbox.c.recorded_at, outbox.c.settled_at).where(outbox.c.state == ACKED)
            ):
                moment = recorded_at if recorded_at.tzinfo else recorded_at.replace(tzinfo=dt.UTC)
                samples.append(settled_at - moment.timestamp())
        engine.dispose()
    return samples


class _Clock:
    """Starts the fleet and counts the CPU seconds each side used until `stop`."""

    def __init__(self, fleet: Fleet, servers: int) -> None:
        self._fleet = fleet
        self._servers = [proc.pid for proc in fleet.procs[:servers] if proc.pid]
        self._tills = [proc.pid for proc in fleet.procs[servers:] if proc.pid]
        self._broker = cpu.broker_pid()
        self._before: dict[str, float] = {}
        self._began = 0.0

    def start(self, url: str) -> float:
        self._before = self._sample(url)
        self._began = self._fleet.go()
        return self._began

    def stop(self, url: str) -> dict[str, float]:
        after = self._sample(url)
        wall = time.perf_counter() - self._began
        used = {side: round(after[side] - self._before.get(side, 0.0), 2) for side in after}
        return used | {"wall": round(wall, 2)}

    def _sample(self, url: str) -> dict[str, float]:
        return {
            "server_python": cpu.seconds(self._servers),
            "terminal_relays": cpu.seconds(self._tills),
            "database": cpu.seconds(cpu.database_pids(url)),
            "broker": cpu.seconds([self._broker] if self._broker else []),
        }


def _wait_all_acked(paths: list[str], total: int, began: float, timeout: float = 300) -> float:
    engines = [make_engine(p) for p in paths]
    acked = 0
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
