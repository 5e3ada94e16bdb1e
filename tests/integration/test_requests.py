"""The server request handler against the real RabbitMQ and both server stores.

Catalog rows are written straight into the catalog tables by `CatalogRows` (the way the
catalog write API stores them), requests are published the way a terminal publishes them
(`cajasync.up`, `req.<terminal>.<kind>`), the handler runs until idle, and the test reads
the replies from the terminal's queue and the dead letters from `cajasync.dead`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pika
import pytest
import sqlalchemy as sa

from cajasync.broker.ports import REASON_HEADER, ROUTING_KEY_HEADER
from cajasync.core import topology
from cajasync.core.db import make_engine
from cajasync.core.server_tables import catalog_images, catalog_records, change_log, stream_heads
from cajasync.core.settings import Settings
from cajasync.errors import StoreError
from inbox.entitlement import Requester, streams_for
from inbox.reply_wire import event_body, page_body, stored_change
from inbox.requests import run_requests
from inbox.server_store import SqlServerStore
from schemas.codec import decode_down, encode
from schemas.feed import (
    CatchUpRequest,
    Change,
    ChangeEvent,
    HighWaterMark,
    HighWaterRequest,
    ImageData,
    ImageRequest,
    ImagesDone,
    SnapshotDone,
    SnapshotPage,
    SnapshotRequest,
    split_stream,
    stream_name,
)
from schemas.records import Combo, ComboItem, Product, ReceiptBook, Record, StockLevel, Table

pytestmark = pytest.mark.rabbitmq

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
IDLE_S = 0.4


# -- catalog rows, written as the catalog write API stores them ---------------------------


class CatalogRows:
    """Writes catalog records, stream heads, change log entries and images directly."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.heads: dict[str, int] = {}
        self.versions: dict[tuple[str, str], int] = {}

    def put(self, records: Sequence[Record], scope: str = "all") -> list[Change]:
        """Create or replace records of one topic in `scope`, next versions and seqs."""
        changes = [self._change(record.topic, scope, record.key, record) for record in records]
        self._write(changes, scope)
        return changes

    def delete(self, topic: str, key: str, scope: str = "all") -> Change:
        """Leave a tombstone for `key`."""
        change = self._change(topic, scope, key, None)
        self._write([change], scope)
        return change

    def image(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        row = {"sha256": sha256, "size": len(data), "data": data, "created_at": NOW}
        with self.engine.begin() as connection:
            connection.execute(sa.insert(catalog_images), [row])
        return sha256

    def _change(self, topic: str, scope: str, key: str, record: Record | None) -> Change:
        stream = stream_name(topic, scope)
        self.heads[stream] = self.heads.get(stream, 0) + 1
        version = self.versions[(topic, key)] = self.versions.get((topic, key), 0) + 1
        if record is not None:
            record = msgspec.structs.replace(record, version=version)
        return Change(
            stream=stream,
            seq=self.heads[stream],
            topic=topic,
            key=key,
            version=version,
            record=record,
        )

    def _write(self, changes: list[Change], scope: str) -> None:
        with self.engine.begin() as connection:
            for change in changes:
                connection.execute(
                    sa.delete(catalog_records).where(
                        catalog_records.c.topic == change.topic,
                        catalog_records.c.scope == scope,
                        catalog_records.c.key == change.key,
                    )
                )
            connection.execute(sa.insert(catalog_records), [_record_row(c, scope) for c in changes])
            connection.execute(sa.insert(change_log), [_log_row(c, scope) for c in changes])
            for stream in {c.stream for c in changes}:
                connection.execute(sa.delete(stream_heads).where(stream_heads.c.stream == stream))
                connection.execute(
                    sa.insert(stream_heads), [{"stream": stream, "seq": self.heads[stream]}]
                )


def _record_row(change: Change, scope: str) -> dict[str, Any]:
    record = change.record
    return {
        "topic": change.topic,
        "scope": scope,
        "key": change.key,
        "version": change.version,
        "seq": change.seq,
        "deleted": record is None,
        "body": None if record is None else encode(record),
        "image": getattr(record, "image", None),
        "updated_at": NOW,
    }


def _log_row(change: Change, scope: str) -> dict[str, Any]:
    return {
        "stream": change.stream,
        "seq": change.seq,
        "topic": change.topic,
        "scope": scope,
        "key": change.key,
        "version": change.version,
        "body": encode(change),
        "created_at": time.time(),
    }


def product(number: int, *, image: str | None = None) -> Product:
    return Product(
        key=f"P{number:06d}",
        name=f"Producto {number}",
        barcodes=[f"779{number:010d}"],
        price=Decimal("10.50") + number,
        tax_rate=Decimal(21),
        image=image,
    )


def stock(location: str, number: int) -> StockLevel:
    return StockLevel(
        key=f"{location}/P{number:06d}", product=f"P{number:06d}", quantity=Decimal(7)
    )


def receipt_book(pos: str, letter: str) -> ReceiptBook:
    return ReceiptBook(key=f"{pos}/{letter}", name=f"Factura {letter}", voucher_type="FA")


def table(number: int) -> Table:
    return Table(key=f"M{number}", name=f"Mesa {number}", seats=4)


# -- a terminal ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Terminal:
    """A terminal's identity and its inbox queue on the test broker."""

    terminal: str
    location: str
    pos: str
    kind: str
    channel: Any

    def publish(self, request: Any, *, body: bytes | None = None, route: str | None = None) -> None:
        """Publish a request as a terminal does: `req.<terminal>.<kind>`, persistent msgpack."""
        kind = "raw" if body is not None else type(request).__struct_config__.tag
        self.channel.basic_publish(
            topology.UP_EXCHANGE,
            route or f"req.{self.terminal}.{kind}",
            encode(request) if body is None else body,
            pika.BasicProperties(
                delivery_mode=2, content_type="application/msgpack", user_id="guest"
            ),
        )

    def snapshot(self, topics: list[str], **options: Any) -> SnapshotRequest:
        return SnapshotRequest(
            terminal=self.terminal,
            location=self.location,
            pos=self.pos,
            terminal_kind=self.kind,
            request_id=uuid.uuid4().hex,
            topics=topics,
            **options,
        )

    def catch_up(self, stream: str, from_seq: int) -> CatchUpRequest:
        return CatchUpRequest(
            terminal=self.terminal,
            location=self.location,
            pos=self.pos,
            terminal_kind=self.kind,
            stream=stream,
            from_seq=from_seq,
        )

    def received(self) -> list[Any]:
        """Every reply waiting on the terminal's queue, decoded, in order."""
        messages: list[Any] = []
        while True:
            method, _, body = self.channel.basic_get(
                topology.terminal_queue(self.terminal), auto_ack=True
            )
            if method is None:
                return messages
            messages.append(decode_down(body))


@pytest.fixture
def catalog(engine: sa.Engine) -> CatalogRows:
    return CatalogRows(engine)


@pytest.fixture
def make_terminal(
    clean_broker: str, channel: Any, new_terminal_id: Callable[[], str]
) -> Callable[..., Terminal]:
    """Terminals with their inbox queues declared, by location, point of sale and kind."""

    def make(location: str = "L1", pos: str = "PV1", kind: str = "retail") -> Terminal:
        terminal = new_terminal_id()
        topology.declare_terminal(channel, terminal, location, pos, kind)
        return Terminal(terminal, location, pos, kind, channel)

    return make


def answer(engine: sa.Engine, settings: Settings) -> None:
    run_requests(engine, settings, until_idle=IDLE_S)


def pages(messages: list[Any]) -> list[SnapshotPage]:
    return [m for m in messages if isinstance(m, SnapshotPage)]


def sent_keys(messages: list[Any]) -> dict[str, list[str]]:
    """Stream -> keys sent in the snapshot pages, in order."""
    keys: dict[str, list[str]] = {}
    for page in pages(messages):
        keys.setdefault(page.stream, []).extend(c.key for c in page.changes)
    return keys


def dead_letters(channel: Any) -> list[tuple[bytes, dict[str, Any]]]:
    found: list[tuple[bytes, dict[str, Any]]] = []
    while True:
        method, properties, body = channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
        if method is None:
            return found
        found.append((body, properties.headers))


# -- snapshots and refreshes --------------------------------------------------------------


def test_full_snapshot_sends_live_records_in_pages_then_the_high_water(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([product(n) for n in range(2500)])
    catalog.delete("productos", "P000007")
    catalog.put([product(3)])  # P000003 at version 2, seq 2502
    till = make_terminal()
    request = till.snapshot(["productos"])
    till.publish(request)
    answer(engine, settings)
    messages = till.received()
    *page_messages, done = messages
    assert [len(p.changes) for p in page_messages] == [1000, 1000, 499]
    assert all(p.request_id == request.request_id for p in page_messages)
    changes = [c for p in page_messages for c in p.changes]
    assert [c.key for c in changes] == [f"P{n:06d}" for n in range(2500) if n != 7]
    assert changes[3].record == msgspec.structs.replace(product(3), version=2)
    assert (changes[3].seq, changes[3].version, changes[3].stream) == (2502, 2, "productos:all")
    whole = ["productos:all", f"productos:term.{request.terminal}"]  # both sent whole
    assert done == SnapshotDone(
        request_id=request.request_id,
        high_water={"productos:all": 2502},
        records=2499,
        whole=whole,
    )


def test_refresh_sends_only_what_changed_since_the_terminal_position_tombstones_included(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([product(n) for n in range(10)])  # seqs 1..10
    catalog.put([product(2), product(4)])  # seqs 11, 12
    catalog.delete("productos", "P000005")  # seq 13
    till = make_terminal()
    request = till.snapshot(["productos"], since={"productos:all": 10})
    till.publish(request)
    answer(engine, settings)
    [page, done] = till.received()
    assert [(c.key, c.seq, c.version, c.deleted) for c in page.changes] == [
        ("P000002", 11, 2, False),
        ("P000004", 12, 2, False),
        ("P000005", 13, 2, True),
    ]
    assert done.high_water == {"productos:all": 13}
    assert done.records == 3


def test_refresh_from_the_head_sends_nothing_but_the_high_water(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([product(n) for n in range(5)])
    till = make_terminal()
    till.publish(till.snapshot(["productos"], since={"productos:all": 5}))
    answer(engine, settings)
    [done] = till.received()
    assert isinstance(done, SnapshotDone)
    assert (done.high_water, done.records) == ({"productos:all": 5}, 0)


def test_terminal_never_receives_another_locations_stock_or_another_pos_receipt_books(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([stock("L1", 1), stock("L1", 2)], scope="loc.L1")
    catalog.put([stock("L2", 1)], scope="loc.L2")
    catalog.put([receipt_book("PV1", "A")], scope="pos.PV1")
    catalog.put([receipt_book("PV2", "A"), receipt_book("PV2", "B")], scope="pos.PV2")
    till = make_terminal(location="L1", pos="PV1")
    till.publish(till.snapshot(["stock", "talonarios"]))
    answer(engine, settings)
    messages = till.received()
    assert sent_keys(messages) == {
        "stock:loc.L1": ["L1/P000001", "L1/P000002"],
        "talonarios:pos.PV1": ["PV1/A"],
    }
    assert messages[-1].high_water == {"stock:loc.L1": 2, "talonarios:pos.PV1": 1}


def test_terminal_receives_its_own_stream_but_not_another_terminals(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    till, other = make_terminal(), make_terminal()
    catalog.put([product(1)])
    catalog.put([product(2)], scope=f"term.{till.terminal}")
    catalog.put([product(3)], scope=f"term.{other.terminal}")
    till.publish(till.snapshot(["productos"]))
    answer(engine, settings)
    assert sent_keys(till.received()) == {
        "productos:all": ["P000001"],
        f"productos:term.{till.terminal}": ["P000002"],
    }


def test_tables_are_sent_to_a_restaurant_but_not_to_a_shop(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([table(1), table(2)])
    shop, restaurant = make_terminal(kind="retail"), make_terminal(kind="restaurant")
    shop.publish(shop.snapshot(["mesas"], since={"mesas:all": 0}))
    restaurant.publish(restaurant.snapshot(["mesas"]))
    answer(engine, settings)
    [shop_done] = shop.received()
    assert (shop_done.high_water, shop_done.records) == ({}, 0)
    restaurant_messages = restaurant.received()
    assert sent_keys(restaurant_messages) == {"mesas:all": ["M1", "M2"]}
    assert restaurant_messages[-1].high_water == {"mesas:all": 2}


def test_combo_products_adds_the_products_the_combos_are_made_of(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([product(n) for n in range(10)])
    items = [ComboItem(product="P000002", quantity=Decimal(1))]
    items.append(ComboItem(product="P000005", quantity=Decimal(2)))
    combo = Combo(key="C1", name="Combo", price=Decimal(20), items=items)
    catalog.put([combo])
    till = make_terminal()
    till.publish(till.snapshot(["combos"], combo_products=True))
    till.publish(till.snapshot(["combos"]))
    answer(engine, settings)
    *with_products, done, plain_page, plain_done = till.received()
    assert sent_keys(with_products) == {
        "combos:all": ["C1"],
        "productos:all": ["P000002", "P000005"],
    }
    assert (done.high_water, done.records) == ({"combos:all": 1}, 3)
    assert sent_keys([plain_page]) == {"combos:all": ["C1"]}
    assert plain_done.records == 1


def test_snapshot_done_lists_the_images_of_the_records_sent_when_images_are_asked_for(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    red, blue = catalog.image(b"red"), catalog.image(b"blue")
    catalog.put([product(1, image=red), product(2, image=blue), product(3, image=red)])
    catalog.put([product(4)])
    till = make_terminal()
    till.publish(till.snapshot(["productos"], images=True))
    till.publish(till.snapshot(["productos"]))
    answer(engine, settings)
    _, with_images, _, without_images = till.received()
    assert with_images.images == sorted([red, blue])
    assert without_images.images == []


# -- catch-up -----------------------------------------------------------------------------


def test_catch_up_sends_the_missing_range_of_the_change_log_in_seq_order(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    logged = catalog.put([product(n) for n in range(1300)])
    logged.append(catalog.delete("productos", "P000001"))
    till = make_terminal()
    till.publish(till.catch_up("productos:all", from_seq=200))
    answer(engine, settings)
    events = till.received()
    assert all(isinstance(e, ChangeEvent) for e in events)
    assert [len(e.changes) for e in events] == [500, 500, 102]
    assert [c for e in events for c in e.changes] == logged[199:]


def test_catch_up_for_another_locations_stream_is_dead_lettered_with_its_reason(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([stock("L2", 1)], scope="loc.L2")
    till = make_terminal(location="L1")
    till.publish(till.catch_up("stock:loc.L2", from_seq=1))
    answer(engine, settings)
    assert till.received() == []
    [(body, headers)] = dead_letters(till.channel)
    assert "not entitled to stream 'stock:loc.L2'" in headers[REASON_HEADER]
    assert headers[ROUTING_KEY_HEADER] == f"req.{till.terminal}.catch-up"
    assert isinstance(msgspec.msgpack.decode(body), dict)


# -- images -------------------------------------------------------------------------------


def test_images_are_sent_only_for_the_hashes_asked_and_unknown_ones_are_listed_missing(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    red, _blue, green = (catalog.image(data) for data in (b"red", b"blue", b"green"))
    unknown = hashlib.sha256(b"never stored").hexdigest()
    till = make_terminal()
    request = ImageRequest(terminal=till.terminal, request_id="img-1", hashes=[green, unknown, red])
    till.publish(request)
    answer(engine, settings)
    assert till.received() == [
        ImageData(request_id="img-1", sha256=green, data=b"green"),
        ImageData(request_id="img-1", sha256=red, data=b"red"),
        ImagesDone(request_id="img-1", sent=2, missing=[unknown]),
    ]


# -- bad requests -------------------------------------------------------------------------


def test_undecodable_request_lands_in_the_dead_letter_queue_with_its_reason(
    engine: sa.Engine, settings: Settings, make_terminal: Any
) -> None:
    till = make_terminal()
    till.publish(None, body=b"\xc1 not msgpack")
    answer(engine, settings)
    [(body, headers)] = dead_letters(till.channel)
    assert body == b"\xc1 not msgpack"
    assert "undecodable request" in headers[REASON_HEADER]
    assert till.received() == []


def test_request_for_an_unknown_topic_is_dead_lettered_and_the_next_one_answered(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([product(1)])
    till = make_terminal()
    till.publish(till.snapshot(["productos", "unicornios"]))
    till.publish(till.snapshot(["productos"]))
    answer(engine, settings)
    [(_, headers)] = dead_letters(till.channel)
    assert "unknown down topic 'unicornios'" in headers[REASON_HEADER]
    assert sent_keys(till.received()) == {"productos:all": ["P000001"]}


def test_refresh_naming_another_pos_stream_is_dead_lettered(
    engine: sa.Engine, settings: Settings, make_terminal: Any
) -> None:
    till = make_terminal(pos="PV1")
    till.publish(till.snapshot(["talonarios"], since={"talonarios:pos.PV2": 0}))
    answer(engine, settings)
    [(_, headers)] = dead_letters(till.channel)
    assert "not entitled to stream 'talonarios:pos.PV2'" in headers[REASON_HEADER]
    assert till.received() == []


def test_request_of_a_terminal_sent_on_another_terminals_routing_key_is_dead_lettered(
    engine: sa.Engine, settings: Settings, make_terminal: Any
) -> None:
    till, impostor = make_terminal(), make_terminal()
    impostor.publish(till.snapshot(["productos"]), route=f"req.{impostor.terminal}.snapshot")
    answer(engine, settings)
    [(_, headers)] = dead_letters(till.channel)
    assert "does not match a request of terminal" in headers[REASON_HEADER]
    assert till.received() == impostor.received() == []


def test_request_of_a_terminal_without_a_queue_is_answered_into_the_void_and_acked(
    engine: sa.Engine, settings: Settings, catalog: CatalogRows, make_terminal: Any
) -> None:
    catalog.put([product(1)])
    till = make_terminal()
    till.channel.queue_delete(topology.terminal_queue(till.terminal))
    till.publish(till.snapshot(["productos"]))
    stats = run_requests(engine, settings, until_idle=IDLE_S)
    assert (stats.received, stats.undeliverable, stats.replies_sent) == (1, 1, 0)
    again = run_requests(engine, settings, until_idle=IDLE_S)
    assert again.received == 0


# -- the reply wire format (no broker, no store) ------------------------------------------


@pytest.mark.parametrize("deleted", [False, True])
def test_raw_reply_bodies_are_byte_for_byte_the_schema_encoding(deleted: bool) -> None:
    record = None if deleted else msgspec.structs.replace(product(1), version=3)
    change = Change(
        stream="productos:all", seq=9, topic="productos", key="P000001", version=3, record=record
    )
    raw = stored_change(
        "productos:all",
        "productos",
        "P000001",
        seq=9,
        version=3,
        body=None if record is None else encode(record),
    )
    expected_page = SnapshotPage(request_id="r1", stream="productos:all", changes=[change])
    assert page_body("r1", "productos:all", [raw]) == encode(expected_page)
    assert event_body([encode(change)]) == encode(ChangeEvent(changes=[change]))


def test_entitled_streams_follow_the_topic_scope_and_the_terminal_kind() -> None:
    shop = Requester("T1", "L1", "PV1", "retail")
    hotel = Requester("T2", "L1", "PV1", "hotel")
    assert streams_for(shop, "stock") == ["stock:loc.L1", "stock:term.T1"]
    assert streams_for(shop, "talonarios") == ["talonarios:pos.PV1", "talonarios:term.T1"]
    assert streams_for(shop, "productos") == ["productos:all", "productos:term.T1"]
    assert streams_for(shop, "mesas") == []
    assert streams_for(hotel, "mesas") == ["mesas:all", "mesas:term.T2"]
    assert split_stream("mesas:all") == ("mesas", "all")


def test_store_failure_gives_the_request_back_and_stops_the_handler(
    engine: sa.Engine,
    settings: Settings,
    catalog: CatalogRows,
    make_terminal: Any,
    tmp_path: Path,
) -> None:
    catalog.put([product(1)])
    till = make_terminal()
    till.publish(till.snapshot(["productos"]))
    uninitialised = make_engine(str(tmp_path / "not-a-server.db"))
    with pytest.raises(StoreError, match="answering terminal"):
        run_requests(uninitialised, settings, until_idle=IDLE_S)
    uninitialised.dispose()
    assert till.received() == []
    answer(engine, settings)
    assert sent_keys(till.received()) == {"productos:all": ["P000001"]}


# -- where a rebuilt till continues (high-water requests) ---------------------------------


def test_high_water_request_is_answered_once_and_registers_the_tills_incarnation(
    engine: sa.Engine, settings: Settings, make_terminal: Any
) -> None:
    till = make_terminal()
    incarnation = uuid.uuid4()
    request = HighWaterRequest(
        terminal=till.terminal, request_id="hw-1", incarnation=incarnation, last_seq=7
    )
    till.publish(request)
    stats = run_requests(engine, settings, until_idle=IDLE_S)
    assert (stats.received, stats.high_water, stats.replies_sent) == (1, 1, 1)
    assert till.received() == [
        HighWaterMark(
            request_id="hw-1",
            terminal=till.terminal,
            max_seq=0,
            contiguous_seq=0,
            held=0,
            incarnation=incarnation,
            start_seq=7,
        )
    ]
    current = SqlServerStore(engine).lineages()[till.terminal]
    assert [(row.incarnation, row.status) for row in current] == [(str(incarnation), "current")]


def test_high_water_request_for_another_terminal_is_dead_lettered_and_registers_nothing(
    engine: sa.Engine, settings: Settings, make_terminal: Any
) -> None:
    till, impostor = make_terminal(), make_terminal()
    request = HighWaterRequest(terminal=till.terminal, request_id="hw", incarnation=uuid.uuid4())
    impostor.publish(request, route=f"req.{impostor.terminal}.high-water")
    answer(engine, settings)
    [(_, headers)] = dead_letters(till.channel)
    assert "does not match a request of terminal" in headers[REASON_HEADER]
    assert till.received() == impostor.received() == []
    assert SqlServerStore(engine).lineages() == {}
