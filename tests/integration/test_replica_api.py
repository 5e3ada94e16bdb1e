"""What technicians read from the replica with `cajasync replica` (the typed API the POS
reads through is in the replica contract: tests/contracts/replica_contract.py)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.processes.terminal_init import init_terminal
from cli.main import cli
from inbox.replica import apply_down
from schemas.feed import Change, SnapshotPage
from schemas.records import Product, Record
from tests.contracts.replica_contract import ADMIN, COMPANY, YERBA

IDENTITY = TerminalIdentity("T001", "L1", "PV1", "retail")


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "caja.db")
    init_terminal(path, IDENTITY, Settings(), declare=False).dispose()
    return path


@pytest.fixture
def engine(db: str) -> Iterator[Engine]:
    from cajasync.core.db import make_engine

    engine = make_engine(db)
    yield engine
    engine.dispose()


def put(engine: Engine, *records: Record, deleted: tuple[Record, ...] = ()) -> None:
    """Apply records (and tombstones of `deleted`) as a snapshot page would."""
    changes = [
        Change(
            stream=f"{r.topic}:all", seq=1, topic=r.topic, key=r.key, version=r.version, record=r
        )
        for r in records
    ] + [
        Change(stream=f"{r.topic}:all", seq=1, topic=r.topic, key=r.key, version=r.version + 1)
        for r in deleted
    ]
    with engine.begin() as connection:
        apply_down(
            connection,
            SnapshotPage(request_id="test", stream="productos:all", changes=changes),
            IDENTITY,
        )


# -- cajasync replica ---------------------------------------------------------------------


def test_replica_show_json_is_the_record_as_msgspec_encodes_it(engine: Engine, db: str) -> None:
    put(engine, YERBA)

    result = CliRunner().invoke(
        cli, ["replica", "show", "--db", db, "products", YERBA.key, "--json"]
    )

    assert result.exit_code == 0, result.output
    assert result.output.strip() == msgspec.json.encode(YERBA).decode()
    shown = json.loads(result.output)
    assert (shown["key"], shown["version"], shown["price"]) == (YERBA.key, 3, "3150.00")


def test_replica_show_of_an_unknown_key_fails_naming_it(db: str) -> None:
    result = CliRunner().invoke(cli, ["replica", "show", "--db", db, "productos", "nope"])

    assert result.exit_code == 1
    assert "no productos record with key 'nope'" in result.output


def test_replica_list_json_is_an_array_of_records(engine: Engine, db: str) -> None:
    offer_free = [
        Product(key=f"P{i}", version=1, name=f"P{i}", price=Decimal(i), tax_rate=Decimal(21))
        for i in range(5)
    ]
    put(engine, *offer_free)

    result = CliRunner().invoke(
        cli, ["replica", "list", "--db", db, "productos", "--limit", "3", "--json"]
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(msgspec.json.encode(offer_free[:3]))


def test_replica_count_json_maps_topics_to_counts(engine: Engine, db: str) -> None:
    put(engine, YERBA, COMPANY, ADMIN)

    everything = CliRunner().invoke(cli, ["replica", "count", "--db", db, "--json"])
    one = CliRunner().invoke(cli, ["replica", "count", "--db", db, "config", "--json"])

    assert json.loads(everything.output)["productos"] == 1
    assert json.loads(one.output) == {"configuracion": 2}


def test_replica_tables_are_readable_without_json(engine: Engine, db: str) -> None:
    put(engine, YERBA)
    runner = CliRunner()

    listed = runner.invoke(cli, ["replica", "list", "--db", db, "productos"])
    shown = runner.invoke(cli, ["replica", "show", "--db", db, "productos", YERBA.key])
    counted = runner.invoke(cli, ["replica", "count", "--db", db])

    assert listed.exit_code == shown.exit_code == counted.exit_code == 0
    assert "Yerba 1kg" in listed.output
    assert "mayorista" in shown.output
    assert "productos" in counted.output


def test_an_unknown_topic_is_refused_with_the_known_ones(db: str) -> None:
    result = CliRunner().invoke(cli, ["replica", "count", "--db", db, "frutas"])

    assert result.exit_code != 0
    assert "unknown topic 'frutas'" in str(result.exception)


def test_dates_in_records_print_as_iso_text(engine: Engine, db: str) -> None:
    from schemas.records import Offer

    offer = Offer(
        key="O1",
        version=1,
        product=YERBA.key,
        price=Decimal("2999.99"),
        valid_from=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        valid_to=dt.datetime(2026, 12, 31, tzinfo=dt.UTC),
    )
    put(engine, offer)

    result = CliRunner().invoke(cli, ["replica", "show", "--db", db, "offers", "O1", "--json"])

    assert json.loads(result.output)["valid_from"] == "2026-12-01T00:00:00Z"
