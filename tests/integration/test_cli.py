"""The command line, as technicians and scripts use it (real broker, SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.waiting import wait_for


def cajasync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def runner(broker_url: str) -> CliRunner:
    return CliRunner(env={"CAJASYNC_BROKER_URL": broker_url})


@pytest.fixture
def terminal_db(
    runner: CliRunner, tmp_path: Path, new_terminal_id: Callable[[], str], clean_broker: str
) -> tuple[str, str]:
    terminal = new_terminal_id()
    db = str(tmp_path / "caja.db")
    init = ["terminal", "init", "--db", db, "--id", terminal, "--location", "L1", "--pos", "PV1"]
    result = runner.invoke(cli, [*init, "--offline"])  # a new id, and no server to ask
    assert result.exit_code == 0, result.output
    return terminal, db


def test_simulated_operations_are_listed_as_pending_with_the_documented_fields(
    runner: CliRunner, terminal_db: tuple[str, str]
) -> None:
    _, db = terminal_db
    result = runner.invoke(
        cli, ["terminal", "simulate", "--db", db, "--sales", "12", "--payments", "2", "--z-close"]
    )
    assert result.exit_code == 0, result.output

    listed = runner.invoke(cli, ["pending", "list", "--db", db, "--json"])
    rows = json.loads(listed.output)
    assert len(rows) >= 15
    assert {"op_id", "seq", "topic", "version", "state", "attempts", "last_error"} <= set(rows[0])
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    sales = json.loads(
        runner.invoke(cli, ["pending", "list", "--db", db, "--topic", "sales", "--json"]).output
    )
    assert {r["topic"] for r in sales} == {"ventas"}


def test_terminal_and_server_run_until_idle_leave_nothing_pending(
    runner: CliRunner, terminal_db: tuple[str, str], server_db_url: str
) -> None:
    terminal, db = terminal_db
    assert runner.invoke(cli, ["server", "init", "--db", server_db_url]).exit_code == 0
    runner.invoke(
        cli, ["terminal", "simulate", "--db", db, "--sales", "30", "--payments", "3", "--z-close"]
    )
    env = {"CAJASYNC_BROKER_URL": runner.env["CAJASYNC_BROKER_URL"] or ""}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "server",
            "run",
            "--db",
            server_db_url,
            "--until-idle",
            "4",
            "--allow-shared-user",  # the till publishes as guest
        ],
        env={**os.environ, **env},
    )
    relay = cajasync("terminal", "run", "--db", db, "--until-idle", "3", env=env)
    assert relay.returncode == 0, relay.stderr
    assert server.wait(timeout=60) == 0

    assert json.loads(runner.invoke(cli, ["pending", "list", "--db", db, "--json"]).output) == []
    stats = json.loads(
        runner.invoke(cli, ["server", "stats", "--db", server_db_url, "--json"]).output
    )
    mine = next(t for t in stats["terminals"] if t["terminal"] == terminal)
    assert mine["topics"]["ventas"] == 30
    assert mine["topics"]["pagos"] == 3
    assert mine["topics"]["cierres-z"] == 1
    assert mine["contiguous_seq"] >= 34


def test_replay_of_an_unknown_op_id_says_which_and_changes_nothing(
    terminal_db: tuple[str, str],
) -> None:
    _, db = terminal_db
    missing = str(uuid.uuid4())
    result = cajasync("pending", "replay", "--db", db, missing)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: not in this terminal's outbox: {missing}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["pending", "list", "--db", "/nonexistent/caja.db"],
            "no terminal database at /nonexistent/caja.db",
        ),
        (["pending", "replay", "--db", "x.db"], "give either --all or one or more OP_IDs"),
        (["pending", "replay", "--db", "x.db", "not-a-uuid"], "is not an op id"),
        (["terminal", "simulate", "--db", "x.db", "--sales", "-1"], "--sales"),
        (
            [
                "terminal",
                "init",
                "--db",
                "x.db",
                "--id",
                "T.1",
                "--location",
                "L",
                "--pos",
                "P",
                "--no-broker",
            ],
            "terminal 'T.1' must be 1-32 letters",
        ),
    ],
)
def test_a_wrong_argument_gets_one_clear_line(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_no_broker_is_reported_in_one_line_with_how_to_start_one(tmp_path: Path) -> None:
    result = cajasync(
        "demo",
        "--dir",
        str(tmp_path),
        env={"CAJASYNC_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/%2F"},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "127.0.0.1:1" in lines[0]
    assert "rabbitmq-server" in lines[0]


def test_queues_lists_the_server_queues_with_counts(runner: CliRunner, clean_broker: str) -> None:
    def listed() -> dict[str, dict[str, object]]:
        result = runner.invoke(cli, ["queues", "--json"])
        assert result.exit_code == 0, result.output
        return {q["name"]: q for q in json.loads(result.output)}

    assert {"cajasync.ops", "cajasync.requests", "cajasync.dead"} <= set(listed())
    # purged by clean_broker; the management API's counts catch up within a few seconds
    wait_for(lambda: listed()["cajasync.ops"]["ready"] == 0, "cajasync.ops shown empty")
