"""The server catalog contract on SQLite and PostgreSQL, and its errors on a store never
set up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cajasync.core.db import make_engine
from cajasync.errors import StoreError
from outbox.catalog_store import SqlCatalogStore
from tests.contracts.catalog_contract import CatalogContract, product


class TestSqlCatalog(CatalogContract):
    @pytest.fixture
    def store(self, server_db_url: str) -> Iterator[SqlCatalogStore]:
        engine = make_engine(server_db_url)
        yield SqlCatalogStore(engine)
        engine.dispose()


def test_the_catalog_of_a_store_never_set_up_says_what_to_run(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    store = SqlCatalogStore(engine)
    try:
        with pytest.raises(StoreError, match=r"server catalog: upserting .*`cajasync server init`"):
            store.upsert_many([product("A")])
        with pytest.raises(StoreError, match=r"`cajasync server init`"):
            store.heads(["productos:all"])
    finally:
        engine.dispose()
