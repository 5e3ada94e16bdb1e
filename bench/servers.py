"""Server ingest scaled out: the `e2e` pipeline (terminals' relays -> broker -> ingest on
PostgreSQL -> receipts) with one ingest process and with two, in the same run, on the same
operations. Reports operations/s of each, the ratio, and where the CPU went during each run
(seconds of CPU per second of wall time, from /proc: ingest processes, terminal relays,
PostgreSQL's processes, the broker's Erlang VM), so "why not 2x" has an answer.

PostgreSQL and the broker are shared with whatever else runs on the machine: their shares
are what their processes used meanwhile, ours or not.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench import cpu
from bench.common import Result, fill_outbox, fresh_pg_database, new_terminal, purge_ops
from bench.e2e import _applied, _wait_all_acked
from bench.procs import Fleet
from cajasync.core.db import make_engine, upgrade
from cajasync.samples.simulate import TicketMaker

TICKS = os.sysconf("SC_CLK_TCK")


def run(
    terminals: int = 10, per_terminal: int = 2_000, servers: tuple[int, ...] = (1, 2)
) -> Result:
    rates: dict[int, float] = {}
    details: dict[str, object] = {"terminals": terminals, "per_terminal": per_terminal}
    for count in servers:
        rate, cpu, applied = _one(terminals, per_terminal, count)
        rates[count] = rate
        details[f"{count}_server_ops_per_s"] = round(rate)
        details[f"{count}_server_cpu_per_wall_s"] = cpu
        details[f"{count}_server_applied"] = applied
    one, most = rates[servers[0]], rates[servers[-1]]
    return Result(
        name="servers",
        metric=f"operations/s with {servers[-1]} ingest processes on one PostgreSQL store",
        value=round(most),
        baselines={f"{servers[0]} ingest process (ops/s)": round(one)},
        ratios={f"{servers[-1]} vs {servers[0]}": round(most / one, 2)},
        targets={"ratio": "reported (2 cores: ingest, relays, PostgreSQL, broker share them)"},
        passed=all(details[f"{n}_server_applied"] == terminals * per_terminal for n in servers),
        details=details,
    )


def _one(terminals: int, per_terminal: int, servers: int) -> tuple[float, dict[str, float], int]:
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
        roles = [("ingest", server_url)] * servers + [("terminal", p) for p in paths]
        fleet = Fleet(roles)
        pids: dict[str, list[int]] = {
            "ingest": [p.pid for p in fleet.procs[:servers] if p.pid is not None],
            "terminals": [p.pid for p in fleet.procs[servers:] if p.pid is not None],
            "postgresql": _pids("postgres"),
            "broker": _broker_pids(),
        }
        before = {name: _cpu(group) for name, group in pids.items()}
        try:
            elapsed = _wait_all_acked(paths, total, fleet.go())
            pids["postgresql"] = _pids("postgres")  # backends opened since count from zero
            after = {name: _cpu(group) for name, group in pids.items()}
        finally:
            fleet.close()
        applied = _applied(server_url)
    cpu = {
        name: round(
            sum(t - before[name].get(pid, 0.0) for pid, t in after[name].items()) / elapsed, 2
        )
        for name in pids
    }
    return total / elapsed, cpu, applied


def _broker_pids() -> list[int]:
    """The node under test: the one listening on CAJASYNC_BROKER_URL's port when it is set
    (a private node), else every RabbitMQ VM on the machine."""
    url = os.environ.get("CAJASYNC_BROKER_URL")
    pid = cpu.broker_pid(url) if url else None
    return [pid] if pid else _pids("beam.smp")


def _pids(name: str) -> list[int]:
    """Processes whose command name is `name` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each process used so far; gone ones are left out."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (14, 15)
    return used
