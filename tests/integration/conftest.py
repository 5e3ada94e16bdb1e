"""Fixtures the server-side integration tests share: the server store and a terminal queue;
for the down-flow tests, a private vhost (`down_url`, once per module), a `server` store to
run `serve` on and initialised `terminals`.

A test module that needs another `engine`, `terminal` or `server` defines its own, which wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cajasync.core import topology
from cajasync.core.db import make_engine
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from tests.integration.down_support import (
    Server,
    Terminal,
    delete_terminal_queues,
    make_server,
    make_terminal,
    purge,
    vhost_for,
)
from tests.integration.relay_support import declare_server_topology, rabbitmqctl_missing


@pytest.fixture
def engine(server_db_url: str) -> Iterator[sa.Engine]:
    """The server store (SQLite and PostgreSQL, by `server_db_url`), disposed after."""
    engine = make_engine(server_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def terminal(clean_broker: str, channel: Any, new_terminal_id: Callable[[], str]) -> str:
    """A terminal whose inbox queue exists, so receipts and replay requests land there."""
    terminal = new_terminal_id()
    topology.declare_terminal(channel, terminal, "L1", "PV1", "retail")
    return terminal


# -- the down flow ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def down_url(broker_url: str) -> Iterator[str]:
    with vhost_for(broker_url, "down") as url:
        if url is None:
            rabbitmqctl_missing("the down-flow tests")
            return
        declare_server_topology(url)
        yield url


@pytest.fixture
def down_settings(settings: Settings, down_url: str) -> Settings:
    return settings.with_overrides(broker_url=down_url)


@pytest.fixture
def server(server_db_url: str, down_settings: Settings, down_url: str) -> Iterator[Server]:
    """The server store (not running yet: `server.start()`), its shared queues emptied."""
    purge(down_url, topology.OPS_QUEUE, topology.REQUESTS_QUEUE, topology.DEAD_QUEUE)
    server = make_server(server_db_url, down_settings)
    try:
        yield server
        if server.loop is not None and not server.loop.stop_event.is_set():
            server.finish()
    finally:
        if server.loop is not None:
            server.loop.stop_event.set()
        server.engine.dispose()


@pytest.fixture
def terminals(
    tmp_path: Path,
    down_settings: Settings,
    down_url: str,
    new_terminal_id: Callable[[], str],
) -> Iterator[Callable[[str, str, str], Terminal]]:
    """Make initialised terminals (location, point of sale, kind); stopped and their queues
    deleted afterwards."""
    made: list[Terminal] = []

    def make(location: str, pos: str, kind: str) -> Terminal:
        terminal_id = new_terminal_id()
        identity = TerminalIdentity(terminal_id, location, pos, kind)
        made.append(make_terminal(str(tmp_path / f"{terminal_id}.db"), identity, down_settings))
        return made[-1]

    yield make
    for terminal in made:
        terminal.stop_all()
        terminal.engine.dispose()
    delete_terminal_queues(down_url, [terminal.id for terminal in made])
