"""Fault-test fixtures: a server store (SQLite and PostgreSQL) and initialised terminals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.samples.simulate import simulate

pytestmark = pytest.mark.slow


@pytest.fixture
def make_terminal(
    tmp_path: Path, settings: Settings, new_terminal_id: Callable[[], str], clean_broker: str
) -> Callable[..., tuple[str, Path]]:
    """Create, initialise and fill a terminal database; returns (terminal id, path)."""
    from cajasync.processes.terminal_init import init_terminal

    def make(sales: int = 0, payments: int = 0, z_close: bool = False) -> tuple[str, Path]:
        terminal = new_terminal_id()
        path = tmp_path / f"{terminal}.db"
        engine = init_terminal(
            str(path), TerminalIdentity(terminal, "L1", "PV1", "retail"), settings
        )
        if sales or payments or z_close:
            simulate(engine, sales=sales, payments=payments, z_close=z_close, seed=1)
        engine.dispose()
        return terminal, path

    return make


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """Environment for cajasync child processes: the test broker, short timers."""
    return {
        "CAJASYNC_BROKER_URL": settings.broker_url,
        "CAJASYNC_RESEND_AFTER_S": "5",
        "CAJASYNC_GAP_GRACE_S": "1",
        "CAJASYNC_RETRY_INITIAL_S": "0.2",
        "CAJASYNC_RETRY_MAX_S": "2",
        "CAJASYNC_ALLOW_SHARED_USER": "1",  # the tills publish as guest
    }
