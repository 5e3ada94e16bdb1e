"""Z close reconciliation end to end: a till (`run_terminal`) and the server (`serve`) on the
real RabbitMQ, both server stores. The POS is the simulator, recording through `record`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.server_tables import operations, received
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, outbox
from cajasync.processes.server import serve
from cajasync.processes.terminal import run_terminal
from cajasync.samples.simulate import PosSimulator, pos_sales
from cli.main import cli
from inbox.zreconcile import z_report
from outbox.record import record
from schemas.ops import Sale, ZClose
from schemas.topics import SALES
from tests.integration.down_support import Loop
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq


class Store:
    """A till and the server, each running in a thread."""

    def __init__(self, server_db_url: str, till_db: Path, terminal: str, settings: Settings):
        self.terminal = terminal
        self.server_url = server_db_url
        self.server_engine = make_engine(server_db_url)
        self.till = make_engine(str(till_db))
        upgrade(self.till, "terminal")
        with self.till.begin() as connection:
            save_identity(connection, TerminalIdentity(terminal, "L1", "PV1", "retail"))
        self.pos = PosSimulator(self.till, seed=11)
        self.server = Loop("server", lambda stop: serve(self.server_engine, settings, stop=stop))
        self.relay = Loop("till", lambda stop: run_terminal(self.till, settings, stop=stop))

    def sell(self, count: int) -> None:
        for _ in range(count):
            self.pos.sale()

    def z_of_sales(self) -> ZClose:
        """The Z the simulator would close the day with now (nothing recorded)."""
        with self.till.connect() as connection:
            tickets = connection.execute(
                sa.select(pos_sales.c.ticket).order_by(pos_sales.c.number)
            ).scalars()
            sales = [msgspec.msgpack.decode(ticket, type=Sale) for ticket in tickets]
        return self.pos.maker.make_z(1, sales)

    def record(self, z: ZClose) -> None:
        with self.till.begin() as connection:
            record(connection, z)

    def all_acked(self) -> bool:
        with self.till.connect() as connection:
            states = connection.execute(sa.select(outbox.c.state).distinct()).scalars().all()
        return set(states) == {ACKED}

    def wait_settled(self) -> None:
        wait_for(self.all_acked, "every outbox row acked", self.relay, self.server)

    def z(self) -> dict[str, Any] | None:
        rows = z_report(self.server_engine, terminal=self.terminal)
        return rows[0] if rows else None

    def wait_z(self, state: str) -> dict[str, Any]:
        wait_for(lambda: (self.z() or {}).get("state") == state, f"the Z {state}", *self.loops)
        row = self.z()
        assert row is not None
        return row

    def lose_sales(self, numbers: set[int]) -> None:
        """Delete sales from the server's tables, as if they had been lost."""
        with self.server_engine.begin() as connection:
            held = connection.execute(
                sa.select(operations.c.op_id, operations.c.payload).where(
                    operations.c.terminal == self.terminal, operations.c.topic == SALES
                )
            ).all()
            lost = [
                op_id
                for op_id, payload in held
                if msgspec.json.decode(payload, type=Sale).number in numbers
            ]
            assert len(lost) == len(numbers)
            connection.execute(operations.delete().where(operations.c.op_id.in_(lost)))
            connection.execute(received.delete().where(received.c.op_id.in_(lost)))

    def held_numbers(self) -> set[int]:
        with self.server_engine.connect() as connection:
            payloads = connection.execute(
                sa.select(operations.c.payload).where(
                    operations.c.terminal == self.terminal, operations.c.topic == SALES
                )
            ).scalars()
            return {msgspec.json.decode(p, type=Sale).number for p in payloads}

    @property
    def loops(self) -> tuple[Loop, Loop]:
        return self.relay, self.server

    def close(self) -> None:
        for loop in self.loops:
            loop.finish()
        self.till.dispose()
        self.server_engine.dispose()


@pytest.fixture
def store(
    server_db_url: str,
    tmp_path: Path,
    settings: Settings,
    clean_broker: str,
    terminal: str,
) -> Iterator[Store]:
    running = Store(server_db_url, tmp_path / "caja.db", terminal, settings)
    try:
        yield running
    finally:
        running.close()


def test_a_z_whose_sales_all_arrived_ends_reconciled(store: Store) -> None:
    store.sell(12)
    store.pos.void(_op_id_of(store.till, 5))
    store.pos.z_close()

    row = store.wait_z("reconciled")

    assert (row["first_receipt"], row["last_receipt"]) == (1, 12)
    assert (row["sale_count"], row["found_count"]) == (11, 11)  # the voided sale: in no total
    assert row["total"] == row["found_total"]
    assert row["expected"] == row["found"]
    assert (row["missing"], row["replay_asked"], row["difference"]) == ([], 0, "")


def test_a_z_with_sales_lost_on_the_server_asks_the_till_for_them_and_ends_reconciled(
    store: Store,
) -> None:
    store.sell(10)
    store.wait_settled()
    store.lose_sales({3, 7})
    assert store.held_numbers() == {1, 2, 4, 5, 6, 8, 9, 10}

    store.pos.z_close()

    row = store.wait_z("reconciled")
    assert store.held_numbers() == set(range(1, 11))
    assert row["replay_asked"] == 1
    assert row["missing"] == []
    assert row["found_count"] == row["sale_count"] == 10


def test_a_z_naming_a_sale_the_till_never_had_is_a_discrepancy_at_once(
    store: Store, settings: Settings
) -> None:
    assert settings.z_replay_wait_s >= 300  # only the till's report can decide in time
    store.sell(5)
    store.record(msgspec.structs.replace(store.z_of_sales(), last_receipt=6))

    row = store.wait_z("discrepancy")

    assert row["missing"] == [6]
    assert row["absent"] == [6]
    assert row["replay_asked"] == 1
    assert row["difference"] == f"Z 1 of {store.terminal}: the till has no sale numbered 6"


def test_a_z_whose_total_differs_is_a_discrepancy_with_the_difference(store: Store) -> None:
    store.sell(6)
    z = store.z_of_sales()
    store.record(msgspec.structs.replace(z, total=z.total + Decimal("10.00")))

    row = store.wait_z("discrepancy")

    assert row["missing"] == []
    assert row["replay_asked"] == 0
    assert row["difference"] == (
        f"Z 1 of {store.terminal}: total {z.total + 10:,.2f} but the 6 sales held add up "
        f"to {z.total:,.2f} (-10.00)"
    )


def test_z_report_lists_the_z_closes_as_json_filtered_by_state_and_period(
    store: Store, new_terminal_id: Callable[[], str]
) -> None:
    store.sell(4)
    store.pos.z_close()
    store.wait_z("reconciled")
    runner = CliRunner()
    base = ["server", "z-report", "--db", store.server_url, "--json"]

    listed = runner.invoke(cli, [*base, "--terminal", store.terminal])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["terminal"], r["z_number"], r["state"]) for r in rows] == [
        (store.terminal, 1, "reconciled")
    ]
    assert rows[0]["sale_count"] == 4

    waiting = runner.invoke(cli, [*base, "--state", "waiting"])
    assert json.loads(waiting.output) == []
    before = runner.invoke(cli, [*base, "--until", "2020-01-01", "--timezone", "UTC"])
    assert json.loads(before.output) == []
    bad = runner.invoke(cli, [*base, "--state", "lost"])
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output


def _op_id_of(engine: Engine, number: int) -> Any:
    import uuid

    with engine.connect() as connection:
        op_id = connection.execute(
            sa.select(pos_sales.c.op_id).where(pos_sales.c.number == number)
        ).scalar_one()
    return uuid.UUID(op_id)
