"""The relay is SIGKILLed after publishing and before marking rows sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.faults.harness import (
    all_acked,
    fill_outbox,
    kill9,
    ops_depth,
    outbox_states,
    server_counts,
    server_op_versions,
    spawn,
    stop,
    terminal_op_ids,
)
from tests.waiting import wait_for


def test_relay_killed_before_marking_sent_republishes_and_server_applies_once(
    make_terminal: Callable[..., tuple[str, Path]],
    server_db_url: str,
    env: dict[str, str],
    clean_broker: str,
    tmp_path: Path,
) -> None:
    terminal, path = make_terminal()
    total = fill_outbox(path, 10_000)
    # a window wider than the kill point: rows are marked sent only as confirms return, so
    # the kill lands after publishing and before marking even on a slow, busy machine
    wide = {**env, "CAJASYNC_PUBLISH_WINDOW": str(total)}
    relay = spawn("terminal", "run", "--db", str(path), env=wide, log=tmp_path / "relay1.log")
    wait_for(
        lambda: ops_depth(clean_broker) >= 1_000,
        "the relay to publish 1,000 operations",
        timeout=60,
    )
    kill9(relay)

    published = ops_depth(clean_broker)
    marked = total - outbox_states(path).get("pending", 0)
    assert published > marked, "the kill should land between publishing and marking rows sent"

    server = spawn("server", "run", "--db", server_db_url, env=env, log=tmp_path / "server.log")
    relay = spawn("terminal", "run", "--db", str(path), env=env, log=tmp_path / "relay2.log")
    try:
        wait_for(lambda: all_acked(path, total), f"all {total} operations acked", timeout=180)
    finally:
        stop(relay)
        stop(server)

    held, tracking_rows = server_counts(server_db_url, terminal)
    assert held == total
    assert tracking_rows == total  # one per (op_id, version): the republished ones deduplicated
    assert server_op_versions(server_db_url, terminal) == terminal_op_ids(path)
