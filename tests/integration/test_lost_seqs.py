"""Seqs that died with a till's old disk: asked for with backoff and shown in `server stats`,
then recorded lost once the rebuilt till's restart is old enough, so contiguity moves on;
one that still arrives is applied. Real RabbitMQ, `serve` on both server stores, `terminal
init` as a subprocess, counted op by op.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cajasync.core import topology
from cajasync.core.settings import Settings
from cli.main import cli
from inbox.ingest import server_stats
from tests.integration.down_support import Server, make_server
from tests.integration.ingest_support import envelope, held_ops, publish_op, tracking_rows
from tests.integration.test_rebuilt_till import Till, init
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq

LOST_AFTER_S = 1.0  # an hour in a store; the rebuilt till's restart is old enough at once


@pytest.fixture
def server(server_db_url: str, settings: Settings, clean_broker: str) -> Iterator[Server]:
    """`serve` on a fresh server store, recording lost seqs LOST_AFTER_S after a restart."""
    server = make_server(server_db_url, settings.with_overrides(lost_after_s=LOST_AFTER_S))
    server.start()
    try:
        yield server
        server.finish()
    finally:
        assert server.loop is not None
        server.loop.stop_event.set()
        server.engine.dispose()


@pytest.fixture
def terminal(channel: Any, new_terminal_id: Callable[[], str]) -> str:
    """A terminal whose queue exists, as its first till declared it."""
    terminal = new_terminal_id()
    topology.declare_terminal(channel, terminal, "L1", "PV1", "retail")
    return terminal


def stats_of(server: Server, terminal: str) -> dict[str, Any]:
    """The terminal's row of `server stats --json` ({} until the server holds anything)."""
    rows = [r for r in server_stats(server.engine)["terminals"] if r["terminal"] == terminal]
    return rows[0] if rows else {}


def stats_cli(server: Server, *extra: str) -> str:
    url = server.engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["server", "stats", "--db", url, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_seqs_the_old_disk_never_sent_are_recorded_lost_and_a_late_one_is_still_applied(
    server: Server, settings: Settings, terminal: str, channel: Any, tmp_path: Path
) -> None:
    assert server.loop is not None
    old = [envelope(terminal, seq) for seq in range(1, 11)]
    for env in old:
        if env.seq not in (6, 7):  # recorded on the old disk, never sent: it died
            publish_op(channel, env)
    wait_for(
        lambda: (stats_of(server, terminal).get("gap") or {}).get("asked", 0) >= 1,
        "the gap asked for",
        server.loop,
    )
    gap = stats_of(server, terminal)["gap"]
    assert (gap["from_seq"], gap["to_seq"]) == (6, 7)
    assert gap["open_since"] <= gap["last_asked"]
    assert "│ 6..7" in stats_cli(server)

    db = tmp_path / "caja.db"
    rebuilt = init(db, terminal, settings.broker_url)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "up to seq 10: this till continues at 11" in rebuilt.stdout
    till = Till(db, settings)
    sold = till.sell(5, first=11)
    till.relay_until_settled(server)
    till.close()
    wait_for(
        lambda: stats_of(server, terminal)["contiguous_seq"] == 15,
        "contiguity past the lost seqs",
        server.loop,
    )

    row = stats_of(server, terminal)
    assert (row["contiguous_seq"], row["max_seq"], row["lost_seqs"], row["gap"]) == (
        15,
        15,
        2,
        None,
    )
    [mine] = [
        r for r in json.loads(stats_cli(server, "--json"))["terminals"] if r["terminal"] == terminal
    ]
    assert mine["lost_seqs"] == 2
    assert "lost seqs" in stats_cli(server)

    publish_op(channel, old[5])  # seq 6 was in the broker all along (or in a backup)
    wait_for(lambda: stats_of(server, terminal)["lost_seqs"] == 1, "seq 6 taken back", server.loop)

    applied = {env.op_id for env in old if env.seq != 7} | {r.op_id for r in sold}
    assert set(held_ops(server.engine, terminal)) == {str(op_id) for op_id in applied}
    assert [(seq, status) for seq, _, _, status in tracking_rows(server.engine, terminal)] == [
        (seq, "applied") for seq in range(1, 16) if seq != 7
    ]
    assert stats_of(server, terminal)["contiguous_seq"] == 15
