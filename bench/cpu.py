"""Where a run's time goes: CPU seconds of processes, from /proc/<pid>/stat (Linux)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

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


def broker_pid(url: str | None = None) -> int | None:
    """The RabbitMQ node's OS pid (shared: its CPU includes other users' work): the process
    listening on `url`'s port when given (a private node), else the machine's own node."""
    if url:
        return listener_pid(urlsplit(url.replace(" ", ",").split(",")[0]).port or 5672)
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


def listener_pid(port: int) -> int | None:
    """The process listening on TCP `port` (from /proc/net/tcp and the processes' fds)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None
