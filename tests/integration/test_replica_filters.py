"""The terminal's rules for keyed pulls, other locations' stock, tables and rooms, live
images and whole snapshots, on a real SQLite terminal database (no broker)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from cajasync.core.db import VERSION_TABLES, make_engine, script_location, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.terminal_tables import metadata, pulls, replica, terminal
from cajasync.errors import ConfigError
from cajasync.processes.pull import other_location, stream_positions
from inbox.replica import FeedMemory, apply_down, positions, start_pull
from inbox.replica_api import ALL_LOCATIONS, Replica
from schemas.feed import (
    Change,
    ChangeEvent,
    ImageData,
    ImageRequest,
    SnapshotDone,
    SnapshotPage,
)
from schemas.records import Product, Record, StockLevel, Table
from schemas.unions import Request

RESTAURANT = TerminalIdentity("T001", "L1", "PV1", "restaurant")
HOTEL = TerminalIdentity("T002", "L1", "PV1", "hotel")
PNG = b"\x89PNG\r\n\x1a\n a photo"
SHA = hashlib.sha256(PNG).hexdigest()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(str(tmp_path / "caja.db"))
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            terminal.insert().values(
                id=1,
                terminal="T001",
                location="L1",
                pos="PV1",
                kind="restaurant",
                last_seq=0,
                created_at=sa.func.current_timestamp(),
            )
        )
    yield engine
    engine.dispose()


def product(key: str, version: int = 1, image: str | None = None) -> Product:
    return Product(
        key=key, version=version, name=key, price=Decimal(1), tax_rate=Decimal(21), image=image
    )


def change(stream: str, seq: int, record: Record) -> Change:
    return Change(
        stream=stream,
        seq=seq,
        topic=record.topic,
        key=record.key,
        version=record.version,
        record=record,
    )


def apply(
    engine: Engine,
    *messages: object,
    identity: TerminalIdentity = RESTAURANT,
    memory: FeedMemory | None = None,
) -> list[Request]:
    requests: list[Request] = []
    memory = memory or FeedMemory()
    for message in messages:
        with engine.begin() as connection:
            requests += apply_down(connection, message, identity, memory=memory)  # type: ignore[arg-type]
    return requests


def pull_row_of(engine: Engine, request_id: str, **values: object) -> None:
    with engine.begin() as connection:
        start_pull(connection, request_id, ["productos"], full=True, images=False, **values)  # type: ignore[arg-type]


def rows(engine: Engine) -> dict[str, tuple[int, bool, str | None]]:
    with engine.connect() as connection:
        found = connection.execute(
            sa.select(replica.c.key, replica.c.version, replica.c.deleted, replica.c.scope)
        )
        return {row.key: (row.version, row.deleted, row.scope) for row in found}


# -- whole snapshots ------------------------------------------------------------------------


def test_a_whole_snapshot_removes_what_it_did_not_list_but_keeps_newer_live_changes(
    engine: Engine,
) -> None:
    apply(engine, ChangeEvent(changes=[change("productos:all", 1, product("STRAY"))]))
    pull_row_of(engine, "r1")
    page = SnapshotPage(
        request_id="r1", stream="productos:all", changes=[change("productos:all", 5, product("A"))]
    )
    late = ChangeEvent(changes=[change("productos:all", 9, product("NEW"))])  # after the read
    done = SnapshotDone(
        request_id="r1", high_water={"productos:all": 8}, records=1, whole=["productos:all"]
    )

    apply(engine, page, late, done)

    assert rows(engine) == {
        "STRAY": (1, True, "all"),  # tombstoned, its version kept
        "A": (1, False, "all"),
        "NEW": (1, False, "all"),
    }
    with engine.connect() as connection:
        row = connection.execute(sa.select(pulls).where(pulls.c.request_id == "r1")).one()
    assert (row.status, row.removed) == ("done", 1)


def test_a_refresh_removes_nothing_it_did_not_send(engine: Engine) -> None:
    apply(engine, ChangeEvent(changes=[change("productos:all", 1, product("KEPT"))]))
    pull_row_of(engine, "r2")
    apply(engine, SnapshotDone(request_id="r2", high_water={"productos:all": 8}, records=0))
    assert rows(engine)["KEPT"] == (1, False, "all")


# -- keyed pulls ----------------------------------------------------------------------------


def test_a_keyed_pull_moves_no_position_and_is_no_refresh_of_its_topic(engine: Engine) -> None:
    apply(engine, ChangeEvent(changes=[change("productos:all", 1, product("A"))]))
    pull_row_of(engine, "k1", keys=["B", "ZZ"])
    page = SnapshotPage(
        request_id="k1", stream="productos:all", changes=[change("productos:all", 7, product("B"))]
    )
    done = SnapshotDone(request_id="k1", high_water={}, records=1, missing_keys=["ZZ"])

    apply(engine, page, done)
    # heads of a stream it never pulled whole ask for nothing
    asked = apply(engine, ChangeEvent(changes=[], heads={"clientes:all": 40}))

    with engine.connect() as connection:
        assert positions(connection) == {"productos:all": 1}
        row = connection.execute(sa.select(pulls).where(pulls.c.request_id == "k1")).one()
    assert json.loads(row.missing_keys) == ["ZZ"]
    assert row.status == "done"
    assert rows(engine)["B"] == (1, False, "all")
    assert asked == []


# -- another location's stock ---------------------------------------------------------------


def test_stock_of_two_locations_is_read_by_location_own_first(engine: Engine) -> None:
    mine = StockLevel(key="L1/P1", version=1, product="P1", quantity=Decimal(5))
    theirs = StockLevel(key="L2/P1", version=1, product="P1", quantity=Decimal(9))
    apply(engine, ChangeEvent(changes=[change("stock:loc.L1", 1, mine)]))
    apply(engine, ChangeEvent(changes=[change("stock:loc.L2", 1, theirs)]))

    view = Replica(engine)
    assert view.query(StockLevel) == [mine]
    assert view.query(StockLevel, location="L2") == [theirs]
    assert view.located("stock", location=ALL_LOCATIONS) == [("L1", mine), ("L2", theirs)]
    assert view.get(StockLevel, "L2/P1") is None
    assert view.get(StockLevel, "L2/P1", location="L2") == theirs
    assert view.count("stock") == {"stock": 1}
    assert view.count("stock", location=ALL_LOCATIONS) == {"stock": 2}


def test_a_refresh_names_only_the_streams_it_covers(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO cajasync_streams VALUES "
                "('stock:loc.L1', 4, 0), ('stock:loc.L2', 6, 0), ('productos:all', 3, 0)"
            )
        )
        own = stream_positions(connection, ["stock"], RESTAURANT)
        there = stream_positions(connection, ["stock"], RESTAURANT, "L2")
    assert own == {"stock:loc.L1": 4}
    assert there == {"stock:loc.L2": 6}


def test_another_location_has_only_its_stock_to_pull() -> None:
    assert other_location(RESTAURANT, ["stock"], "L1") is None  # its own: a plain pull
    assert other_location(RESTAURANT, ["stock"], "L2") == "L2"
    with pytest.raises(ConfigError, match="only its stock"):
        other_location(RESTAURANT, ["stock", "productos"], "L2")
    with pytest.raises(ConfigError, match="letters"):
        other_location(RESTAURANT, ["stock"], "L 2")


# -- tables and rooms -----------------------------------------------------------------------


def test_a_restaurant_holds_tables_a_hotel_rooms_and_a_table_turned_room_leaves(
    engine: Engine, tmp_path: Path
) -> None:
    hotel = make_engine(str(tmp_path / "hotel.db"))
    metadata.create_all(hotel)
    table = Table(key="M1", version=1, name="Mesa 1")
    room = Table(key="H101", version=1, name="Habitación 101", kind="room")
    turned = Table(key="M1", version=2, name="Suite 1", kind="room")
    event = ChangeEvent(changes=[change("mesas:all", 1, table), change("mesas:all", 2, room)])

    for till, identity in ((engine, RESTAURANT), (hotel, HOTEL)):
        apply(till, event, identity=identity)
    assert Replica(engine).query(Table) == [table]
    assert Replica(hotel).query(Table) == [room]

    for till, identity in ((engine, RESTAURANT), (hotel, HOTEL)):
        apply(till, ChangeEvent(changes=[change("mesas:all", 3, turned)]), identity=identity)
    assert Replica(engine).query(Table) == []
    assert rows(engine)["M1"] == (2, True, "all")
    assert Replica(hotel).query(Table) == [room, turned]
    with engine.connect() as connection:
        assert positions(connection) == {"mesas:all": 3}  # the stream moves all the same
    hotel.dispose()


# -- live images ----------------------------------------------------------------------------


def test_a_live_change_to_an_image_the_till_lacks_asks_for_it_once_when_it_keeps_images(
    engine: Engine,
) -> None:
    memory = FeedMemory()
    first = ChangeEvent(changes=[change("productos:all", 1, product("A", 1, SHA))])
    assert apply(engine, first, memory=memory) == []  # never pulled with images: no images

    with engine.begin() as connection:
        start_pull(connection, "img", ["productos"], full=False, images=True)
        connection.execute(pulls.update().values(status="done"))
    again = ChangeEvent(changes=[change("productos:all", 2, product("A", 2, SHA))])
    requests = apply(engine, again, memory=memory)

    assert len(requests) == 1
    assert isinstance(requests[0], ImageRequest)
    assert requests[0].hashes == [SHA]
    once_more = ChangeEvent(changes=[change("productos:all", 3, product("A", 3, SHA))])
    assert apply(engine, once_more, memory=memory) == []  # asked already
    apply(engine, ImageData(request_id=requests[0].request_id, sha256=SHA, data=PNG))
    assert Replica(engine).image(SHA) == PNG
    held = ChangeEvent(changes=[change("productos:all", 4, product("B", 1, SHA))])
    assert apply(engine, held) == []  # held already


# -- the migration --------------------------------------------------------------------------


def test_t0006_gives_existing_replica_rows_the_scope_of_their_topic_on_this_till(
    tmp_path: Path,
) -> None:
    engine = make_engine(str(tmp_path / "old.db"))
    config = Config()
    config.set_main_option("script_location", script_location("terminal"))
    config.set_main_option("version_table", VERSION_TABLES["terminal"])
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "t0005")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO cajasync_terminal (id, terminal, location, pos, kind, last_seq, "
                "created_at) VALUES (1, 'T001', 'L7', 'PV3', 'retail', 0, '2026-01-01')"
            )
        )
        for topic, key in (("stock", "L7/P1"), ("talonarios", "PV3/FA"), ("productos", "P1")):
            connection.execute(
                sa.text(
                    "INSERT INTO cajasync_replica (topic, key, version, deleted, body, image, "
                    "applied_at) VALUES (:topic, :key, 1, 0, NULL, NULL, 0)"
                ),
                {"topic": topic, "key": key},
            )

    upgrade(engine, "terminal")

    with engine.connect() as connection:
        found = connection.execute(sa.select(replica.c.key, replica.c.scope, replica.c.seq))
        assert {row.key: (row.scope, row.seq) for row in found} == {
            "L7/P1": ("loc.L7", None),
            "PV3/FA": ("pos.PV3", None),
            "P1": ("all", None),
        }
    engine.dispose()
