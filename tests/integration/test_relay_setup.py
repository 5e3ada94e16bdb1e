"""`init_terminal`: the terminal database, its identity and its broker queue."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cajasync.core.db import current_revision
from cajasync.core.identity import TerminalIdentity, load_identity
from cajasync.core.settings import Settings
from cajasync.core.topology import terminal_queue
from cajasync.errors import BrokerUnavailable, ConfigError
from cajasync.processes.terminal_init import init_terminal
from tests.integration.relay_support import blocking_channel


@pytest.fixture
def offline(settings: Settings) -> Settings:
    """Settings whose broker URL points at a closed port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return settings.with_overrides(broker_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F")


@pytest.fixture
def identity(new_terminal_id: Callable[[], str]) -> TerminalIdentity:
    return TerminalIdentity(new_terminal_id(), "L1", "PV1", "retail")


@pytest.fixture
def queue_probe(broker_url: str) -> Iterator[Any]:
    with blocking_channel(broker_url) as channel:
        yield channel


@pytest.mark.rabbitmq
def test_init_migrates_saves_the_identity_and_declares_the_queue(
    tmp_path: Path, identity: TerminalIdentity, settings: Settings, queue_probe: Any
) -> None:
    engine = init_terminal(str(tmp_path / "t.db"), identity, settings)

    assert current_revision(engine, "terminal") is not None
    with engine.connect() as connection:
        assert load_identity(connection) == identity
    declared = queue_probe.queue_declare(terminal_queue(identity.terminal), passive=True)
    assert declared.method.message_count == 0
    engine.dispose()


@pytest.mark.rabbitmq
def test_init_run_twice_is_harmless(
    tmp_path: Path, identity: TerminalIdentity, settings: Settings
) -> None:
    init_terminal(str(tmp_path / "t.db"), identity, settings).dispose()
    engine = init_terminal(str(tmp_path / "t.db"), identity, settings)

    with engine.connect() as connection:
        assert load_identity(connection) == identity
    engine.dispose()


def test_an_offline_install_does_not_touch_the_broker(
    tmp_path: Path, identity: TerminalIdentity, offline: Settings
) -> None:
    engine = init_terminal(str(tmp_path / "t.db"), identity, offline, declare=False)

    with engine.connect() as connection:
        assert load_identity(connection).terminal == identity.terminal
    engine.dispose()


def test_init_with_an_unreachable_broker_says_so_after_preparing_the_database(
    tmp_path: Path, identity: TerminalIdentity, offline: Settings
) -> None:
    with pytest.raises(BrokerUnavailable, match="declaring the queue of terminal"):
        init_terminal(str(tmp_path / "t.db"), identity, offline)


def test_init_refuses_an_id_that_cannot_go_in_a_routing_key_before_creating_a_file(
    tmp_path: Path, offline: Settings
) -> None:
    with pytest.raises(ConfigError, match="no dots or spaces"):
        init_terminal(
            str(tmp_path / "t.db"), TerminalIdentity("T.1", "L1", "PV1", "retail"), offline
        )

    assert not (tmp_path / "t.db").exists()
