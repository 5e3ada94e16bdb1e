"""A database that is away when a process starts is waited for, like an outage later on.

`server run` used to exit at once when its PostgreSQL database refused connections at start,
although its loops wait out the same outage once running. The outage is one database
refusing connections (`ALLOW_CONNECTIONS false`), never a restart of the shared cluster.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from tests.faults.harness import outbox_states, server_counts, spawn, stop
from tests.faults.test_store_outage import refusing_connections
from tests.integration.test_server_ingest import envelope, publish
from tests.waiting import wait_for

WAITING = "opening the server database: server store unreachable"


@pytest.fixture
def migrated(pg_url: str) -> str:
    engine = make_engine(pg_url)
    upgrade(engine, "server")
    engine.dispose()
    return pg_url


@pytest.fixture
def terminal(clean_broker: str, channel: Any, new_terminal_id: Callable[[], str]) -> str:
    terminal = new_terminal_id()
    topology.declare_terminal(channel, terminal, "L1", "PV1", "retail")
    return terminal


def cajasync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli.main", *args]
    full_env = {**os.environ, **env}
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=120)


def said(line: str, log: Path, process: subprocess.Popen[bytes]) -> bool:
    """True once `line` is in the log, or the process has ended."""
    return line in log.read_text() or process.poll() is not None


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_server_run_started_while_its_database_refuses_waits_and_then_applies(
    migrated: str,
    pg_admin_url: str,
    channel: Any,
    terminal: str,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    with refusing_connections(pg_admin_url, database_name(migrated)):
        server = spawn("server", "run", "--db", migrated, env=env, log=log)
        try:
            wait_for(lambda: said(WAITING, log, server), "the server to say it waits", timeout=60)
            assert server.poll() is None, log.read_text()  # waiting, not gone
        except BaseException:
            stop(server)
            raise
    try:
        publish(channel, envelope(terminal, 1))
        wait_for(
            lambda: server_counts(migrated, terminal)[0] == 1, "the operation applied", timeout=60
        )
        assert server.poll() is None, log.read_text()
    finally:
        stop(server)


def test_server_run_gives_up_with_the_cause_when_its_database_stays_away(
    migrated: str, pg_admin_url: str, env: dict[str, str]
) -> None:
    with refusing_connections(pg_admin_url, database_name(migrated)):
        done = cajasync(
            "server", "run", "--db", migrated, env={**env, "CAJASYNC_STORE_GIVE_UP_S": "2"}
        )
    assert done.returncode == 1
    assert WAITING in done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "stayed unreachable for 2s" in error
    assert "not currently accepting connections" in error


def test_server_run_on_a_database_that_is_not_initialised_fails_at_once_with_the_hint(
    pg_url: str, env: dict[str, str]
) -> None:
    done = cajasync("server", "run", "--db", pg_url, env=env)
    assert done.returncode == 1
    assert WAITING not in done.stderr
    assert "is not a cajasync server database; initialise it with `cajasync server init" in (
        done.stderr
    )


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another writer holds the till's database (an exclusive lock) until the block ends."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        connection.execute("COMMIT")
        connection.close()


def test_terminal_run_started_while_another_writer_holds_the_till_database_waits_for_it(
    make_terminal: Callable[..., tuple[str, Path]], env: dict[str, str], tmp_path: Path
) -> None:
    """It did already (SQLite's busy timeout, 30 s, covers a lock of a few seconds): kept."""
    _terminal, path = make_terminal(sales=3)
    log = tmp_path / "terminal.log"
    with locked(path):
        relay = spawn("terminal", "run", "--db", str(path), "--until-idle", "1", env=env, log=log)
        threading.Event().wait(3)  # the other writer keeps the lock for a few seconds
        assert relay.poll() is None, log.read_text()
    assert relay.wait(timeout=60) == 0, log.read_text()
    assert outbox_states(path) == {"sent": 3}
