"""Fixtures the server-side integration tests share: the server store and a terminal queue.

A test module that needs another `engine` or `terminal` defines its own, which wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cajasync.core import topology
from cajasync.core.db import make_engine


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
