"""The replica contract on SQLite, and the POS's reads on a database never set up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.db import make_engine, upgrade
from cajasync.errors import NotInitialised
from inbox.replica_api import Replica
from inbox.replica_store import SqlReplicaStore
from schemas.records import Product
from tests.contracts.replica_contract import ReplicaContract

SET_UP_HINT = r"no cajasync tables; set the till up with `cajasync terminal init"


class TestSqliteReplica(ReplicaContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqlReplicaStore]:
        engine = make_engine(str(tmp_path / "caja.db"))
        upgrade(engine, "terminal")
        yield SqlReplicaStore(engine)
        engine.dispose()


@pytest.fixture
def never_set_up(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(str(tmp_path / "empty.db"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda r: r.get(Product, "7790001000011"), id="get"),
        pytest.param(lambda r: r.get_record("productos", "x"), id="get_record"),
        pytest.param(lambda r: r.query(Product), id="query-kind"),
        pytest.param(lambda r: r.query("productos", limit=1), id="query-topic"),
        pytest.param(lambda r: r.count(), id="count"),
        pytest.param(lambda r: r.count("productos"), id="count-topic"),
        pytest.param(lambda r: r.image("0" * 64), id="image"),
    ],
)
def test_reading_the_replica_of_a_database_never_set_up_raises_not_initialised(
    never_set_up: Engine, read: Callable[[Replica], object]
) -> None:
    with pytest.raises(NotInitialised, match=SET_UP_HINT):
        read(Replica(never_set_up))

    assert sa.inspect(never_set_up).get_table_names() == []
