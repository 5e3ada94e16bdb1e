"""The broker application is stopped and started while 5,000 operations flow."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cajasync.core.db import make_engine
from cajasync.samples.simulate import TicketMaker
from outbox.record import record
from tests.faults.harness import (
    all_acked,
    rabbitmqctl,
    server_counts,
    server_op_versions,
    spawn,
    stop,
    terminal_op_ids,
)
from tests.waiting import wait_for

TOTAL = 5_000


@pytest.fixture
def local_rabbitmqctl() -> None:
    if shutil.which("rabbitmqctl") is None:
        message = "rabbitmqctl is needed to stop and start the local broker"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _record_steadily(path: Path, total: int, batch: int, done: threading.Event) -> None:
    engine = make_engine(str(path))
    sales = TicketMaker(seed=5).sales(total)
    for start in range(0, total, batch):
        with engine.begin() as connection:
            for sale in sales[start : start + batch]:
                record(connection, sale)
        time.sleep(0.05)
    engine.dispose()
    done.set()


@pytest.mark.usefixtures("local_rabbitmqctl")
def test_broker_stop_and_start_while_operations_flow_loses_nothing_and_doubles_nothing(
    make_terminal: Callable[..., tuple[str, Path]],
    server_db_url: str,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    terminal, path = make_terminal()
    server = spawn("server", "run", "--db", server_db_url, env=env, log=tmp_path / "server.log")
    relay = spawn("terminal", "run", "--db", str(path), env=env, log=tmp_path / "relay.log")
    recorded = threading.Event()
    pos = threading.Thread(target=_record_steadily, args=(path, TOTAL, 50, recorded))
    pos.start()
    try:
        wait_for(
            lambda: server_counts(server_db_url, terminal)[0] >= TOTAL // 5,
            "traffic to flow",
            timeout=60,
        )
        rabbitmqctl("stop_app")
        try:
            time.sleep(3)  # the POS keeps recording meanwhile
        finally:
            rabbitmqctl("start_app")
        pos.join(timeout=120)
        assert recorded.is_set()
        wait_for(
            lambda: all_acked(path, TOTAL),
            f"all {TOTAL} operations acked after the restart",
            timeout=240,
        )
    finally:
        stop(relay)
        stop(server)
    held, tracking_rows = server_counts(server_db_url, terminal)
    assert (held, tracking_rows) == (TOTAL, TOTAL)
    assert server_op_versions(server_db_url, terminal) == terminal_op_ids(path)
