"""The server catalog contract (outbox/catalog_store/base.py), written once for every
adapter. A subclass named Test... gives `store`, an empty catalog."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from cajasync.errors import CatalogError
from outbox.catalog_store import CatalogStore
from schemas.feed import Change
from schemas.records import Product, StockLevel

PNG = b"\x89PNG\r\n\x1a\n fake"


def product(key: str, price: str = "100.00", *, version: int = 1) -> Product:
    return Product(
        key=key, version=version, name=f"Producto {key}", price=Decimal(price), tax_rate=Decimal(21)
    )


def stock(location: str, product_key: str, *, version: int = 1) -> StockLevel:
    return StockLevel(
        key=f"{location}/{product_key}", version=version, product=product_key, quantity=Decimal(5)
    )


def logged(store: CatalogStore, stream: str) -> list[tuple[int, str, int, bool]]:
    """(seq, key, version, deleted) of every change of `stream`."""
    return [(c.seq, c.key, c.version, c.deleted) for c in store.changes(stream)]


class CatalogContract:
    """Every catalog adapter keeps these rules."""

    def test_new_records_get_version_one_and_the_next_seqs_of_their_stream(
        self, store: CatalogStore
    ) -> None:
        changes = store.upsert_many([product("A"), product("B")])

        assert [(c.stream, c.seq, c.key, c.version) for c in changes] == [
            ("productos:all", 1, "A", 1),
            ("productos:all", 2, "B", 1),
        ]
        assert changes[0].record == product("A")
        assert store.get("productos", "A") == product("A")
        assert store.heads(["productos:all", "clientes:all"]) == {"productos:all": 2}
        assert store.changes("productos:all") == changes

    def test_a_version_on_the_input_is_ignored(self, store: CatalogStore) -> None:
        (change,) = store.upsert_many([product("A", version=41)])

        assert change.version == 1
        assert store.get("productos", "A") == product("A")

    def test_an_identical_upsert_is_skipped_and_returns_the_current_change(
        self, store: CatalogStore
    ) -> None:
        (first,) = store.upsert_many([product("A")])
        (again,) = store.upsert_many([product("A", version=9)])

        assert again == first
        assert logged(store, "productos:all") == [(1, "A", 1, False)]

    def test_a_changed_record_gets_the_next_version_and_seq(self, store: CatalogStore) -> None:
        store.upsert_many([product("A"), product("B")])
        (change,) = store.upsert_many([product("A", "120.00")])

        assert (change.seq, change.version) == (3, 2)
        assert store.get("productos", "A") == product("A", "120.00", version=2)

    def test_a_key_given_twice_in_one_call_gets_two_versions_in_order(
        self, store: CatalogStore
    ) -> None:
        store.upsert_many([product("A", "1.00"), product("A", "2.00")])

        assert logged(store, "productos:all") == [(1, "A", 1, False), (2, "A", 2, False)]
        assert store.get("productos", "A") == product("A", "2.00", version=2)

    def test_a_delete_leaves_a_tombstone_and_a_later_upsert_a_higher_version(
        self, store: CatalogStore
    ) -> None:
        store.upsert_many([product("A")])

        deleted = store.delete("productos", "A")

        assert deleted is not None
        assert (deleted.seq, deleted.version, deleted.record) == (2, 2, None)
        assert store.get("productos", "A") is None
        assert store.delete("productos", "A") is None
        (back,) = store.upsert_many([product("A")])
        assert (back.seq, back.version) == (3, 3)
        assert logged(store, "productos:all") == [
            (1, "A", 1, False),
            (2, "A", 2, True),
            (3, "A", 3, False),
        ]

    def test_deleting_what_was_never_there_is_none_and_logs_nothing(
        self, store: CatalogStore
    ) -> None:
        assert store.delete("productos", "nope") is None
        assert store.changes("productos:all") == []

    def test_a_scoped_topic_has_one_stream_per_scope(self, store: CatalogStore) -> None:
        store.upsert_many([stock("L1", "A"), stock("L1", "B")], scope="loc.L1")
        store.upsert_many([stock("L2", "A")], scope="loc.L2")

        assert store.heads(["stock:loc.L1", "stock:loc.L2"]) == {
            "stock:loc.L1": 2,
            "stock:loc.L2": 1,
        }
        assert store.get("stock", "L1/A", "loc.L1") == stock("L1", "A")
        assert store.get("stock", "L1/A") is None  # not in scope all

    def test_a_scope_a_topic_does_not_take_is_refused_and_nothing_is_written(
        self, store: CatalogStore
    ) -> None:
        with pytest.raises(CatalogError, match=r"stock records need a scope loc.<location>"):
            store.upsert_many([stock("L1", "A")])

        assert store.heads(["stock:all"]) == {}

    def test_a_key_living_in_another_scope_refuses_the_call_and_nothing_is_written(
        self, store: CatalogStore
    ) -> None:
        store.upsert_many([product("A")])

        with pytest.raises(CatalogError, match="lives in scope all"):
            store.upsert_many([product("B"), product("A", "5.00")], scope="term.T1")

        assert store.get("productos", "B", "term.T1") is None
        assert store.changes("productos:term.T1") == []
        assert store.get("productos", "A") == product("A")

    def test_an_invalid_record_refuses_the_whole_call_and_nothing_is_written(
        self, store: CatalogStore
    ) -> None:
        bad = Product(key="X", name="Bad", price=Decimal("-1"), tax_rate=Decimal(21))

        with pytest.raises(CatalogError, match=r"record 1 \('X'\).*nothing was written"):
            store.upsert_many([product("A"), bad])

        assert store.get("productos", "A") is None
        assert store.heads(["productos:all"]) == {}

    def test_images_are_stored_once_by_content_and_named_by_their_sha256(
        self, store: CatalogStore
    ) -> None:
        sha = hashlib.sha256(PNG).hexdigest()

        assert store.put_images([PNG, PNG]) == [sha, sha]
        assert store.put_images([PNG]) == [sha]
        assert store.get_image(sha) == PNG
        assert store.get_image("0" * 64) is None

    def test_the_change_log_reads_after_a_seq(self, store: CatalogStore) -> None:
        store.upsert_many([product(key) for key in "ABCD"])

        changes = store.changes("productos:all", after_seq=2)

        assert [(c.seq, c.key) for c in changes] == [(3, "C"), (4, "D")]
        assert all(isinstance(c, Change) for c in changes)
