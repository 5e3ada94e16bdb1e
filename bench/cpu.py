"""Where a run's time goes: CPU seconds of processes, from /proc/<pid>/stat (Linux)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable

import sqlalchemy as sa

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by `pids` (0 for a pid that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def broker_pid() -> int | None:
    """The RabbitMQ node's OS pid (shared: its CPU includes other users' work)."""
    try:
        out = subprocess.run(
            ["rabbitmqctl", "eval", "os:getpid()."],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
        return int(out.strip().strip('"'))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def database_pids(url: str) -> list[int]:
    """The PostgreSQL backends serving database `url` now."""
    name = url.rsplit("/", 1)[-1]
    engine = sa.create_engine(url.rsplit("/", 1)[0] + "/postgres")
    with engine.connect() as connection:
        pids = connection.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": name}
        ).scalars()
        found = [int(pid) for pid in pids]
    engine.dispose()
    return found
