"""The relay when the broker refuses its messages or the network drops under it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.processes.terminal import RelayStats, drain
from cajasync.processes.terminal_init import init_terminal
from tests.integration.relay_support import (
    CuttableProxy,
    Tap,
    blocking_channel,
    declare_server_topology,
    private_vhost,
    rabbitmqctl_missing,
    record_sales,
    rows,
    running_relay,
    states,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(scope="module")
def bare_broker_url(broker_url: str) -> Iterator[str]:
    """A private vhost where nothing is bound to `cajasync.up`: every op is unroutable."""
    with private_vhost(broker_url, "bare") as url:
        if url is None:
            rabbitmqctl_missing("the unroutable-op tests")
        assert url is not None
        yield url


def new_terminal(tmp_path: Path, terminal: str, settings: Settings) -> Engine:
    identity = TerminalIdentity(terminal, "L1", "PV1", "retail")
    return init_terminal(str(tmp_path / f"{terminal}.db"), identity, settings)


@pytest.fixture
def unroutable(
    tmp_path: Path, settings: Settings, new_terminal_id: Callable[[], str], bare_broker_url: str
) -> Iterator[tuple[str, Engine, Settings]]:
    """A terminal whose ops no queue takes (the server never ran `cajasync server init`)."""
    terminal = new_terminal_id()
    own = settings.with_overrides(broker_url=bare_broker_url, retry_initial_s=0.1)
    engine = new_terminal(tmp_path, terminal, own)
    yield terminal, engine, own
    engine.dispose()


def test_unroutable_ops_stay_pending_with_a_last_error_saying_what_to_run(
    unroutable: tuple[str, Engine, Settings],
) -> None:
    terminal, engine, settings = unroutable
    record_sales(engine, 3)

    confirmed = drain(engine, settings)

    assert confirmed == 0
    for row in rows(engine):
        assert row.state == "pending"
        assert row.attempts == 1
        assert row.last_error == (
            f"unroutable: no queue bound to op.{terminal}.ventas on cajasync.up "
            "– run `cajasync server init`"
        )


def test_unroutable_ops_are_retried_and_go_out_once_a_queue_is_bound(
    unroutable: tuple[str, Engine, Settings],
) -> None:
    terminal, engine, settings = unroutable
    record_sales(engine, 3)

    with running_relay(engine, settings) as relay:
        wait_for(lambda: relay.latest.returned >= 6, "the ops to be returned twice", relay)
        with blocking_channel(settings.broker_url) as channel:
            tap = Tap(channel, terminal)
            wait_for(lambda: set(states(engine).values()) == {"sent"}, "the confirms", relay)
            assert sorted(tap.seqs(3)) == [1, 2, 3]
        stats = relay.finish()

    assert stats.confirmed == 3
    assert all(row.last_error is None and row.attempts >= 3 for row in rows(engine))


@pytest.fixture
def proxied(
    tmp_path: Path, settings: Settings, new_terminal_id: Callable[[], str], bare_broker_url: str
) -> Iterator[tuple[str, Engine, Settings, CuttableProxy]]:
    """A terminal that reaches the broker through a proxy the test can cut."""
    declare_server_topology(bare_broker_url)  # routable from here on in this vhost
    proxy = CuttableProxy(bare_broker_url)
    terminal = new_terminal_id()
    own = settings.with_overrides(broker_url=proxy.url, retry_initial_s=0.05, retry_max_s=0.5)
    engine = new_terminal(tmp_path, terminal, own)
    yield terminal, engine, own, proxy
    engine.dispose()
    proxy.close()


def test_a_dropped_connection_is_reconnected_and_every_row_still_gets_sent(
    proxied: tuple[str, Engine, Settings, CuttableProxy],
) -> None:
    _terminal, engine, settings, proxy = proxied

    with running_relay(engine, settings) as relay:
        record_sales(engine, 200)
        wait_for(lambda: relay.latest.confirmed > 0, "the first confirms", relay)
        proxy.cut()
        record_sales(engine, 200, first=201)
        wait_for(lambda: relay.latest.reconnects >= 1, "a reconnect", relay)
        wait_for(lambda: set(states(engine).values()) == {"sent"}, "every row sent", relay)
        stats = relay.finish()

    assert stats.reconnects >= 1
    assert len(rows(engine)) == 400


def test_a_drain_cut_off_mid_window_reconnects_and_confirms_every_row_once(
    proxied: tuple[str, Engine, Settings, CuttableProxy],
) -> None:
    _terminal, engine, settings, proxy = proxied
    record_sales(engine, 2000)
    cuts: list[RelayStats] = []

    def cut_after_first_window(stats: RelayStats) -> None:
        if not cuts:  # the first report comes right after the first window went out
            cuts.append(stats)
            proxy.cut()

    confirmed = drain(engine, settings, on_progress=cut_after_first_window)

    assert cuts[0].published > 0
    assert cuts[0].confirmed == 0
    assert confirmed == 2000
    assert set(states(engine).values()) == {"sent"}
