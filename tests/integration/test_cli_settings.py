"""A setting out of range stops a command at once with one line naming its variable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.rabbitmq


def cajasync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_terminal_run_with_a_publish_window_of_0_fails_with_one_line(
    tmp_path: Path, broker_url: str, new_terminal_id: Callable[[], str]
) -> None:
    """It used to publish nothing of a full outbox and exit 0."""
    env = {"CAJASYNC_BROKER_URL": broker_url}
    db = str(tmp_path / "caja.db")
    init = ["terminal", "init", "--db", db, "--id", new_terminal_id(), "--location", "L1"]
    assert cajasync(*init, "--pos", "PV1", "--offline", env=env).returncode == 0
    assert cajasync("terminal", "simulate", "--db", db, "--sales", "5", env=env).returncode == 0

    run = cajasync(
        "terminal",
        "run",
        "--db",
        db,
        "--until-idle",
        "1",
        env=env | {"CAJASYNC_PUBLISH_WINDOW": "0"},
    )

    assert run.returncode == 1
    assert run.stderr == (
        "error: CAJASYNC_PUBLISH_WINDOW=0 is out of range: it must be 1 or more\n"
    )
