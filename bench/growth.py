"""Growth over time: the change log after 52 weekly full price updates, with and without
compaction, and how long a till one week behind takes to become current in each case.

On a fresh PostgreSQL store: `products` products, then 52 weekly updates of every price
(one change per product per week, all marked published as the feed relay would). A till
(SQLite replica) holds the catalog as of week 51 (a full snapshot); week 52 is what it
missed. Measured in the same run:

* baseline, no compaction: change-log rows and bytes, and the till's catch-up: the
  server's answer to its CatchUpRequest (the week's changes, read from the log in
  ChangeEvents of 500) decoded and applied to its replica, one commit per message;
* compaction keeping one week (`keep_changes = products`): its time, the log after, and
  the same catch-up (still from the log);
* compaction to the head (every till current but this one, which reported no status):
  the log after, and the till's catch-up answered with a refresh of the stream (pages of
  the records changed since its position, from `catalog_records`).

The broker is left out (the same bytes would cross it in each case): this measures what
grows, the server's reads and the till's writes. Sizes: 52 x 10,000 by default (520,000
changes; a few minutes on this 2-core machine); 52 x 100,000 is linear in the week's
size for the catch-up and in the log's for compaction: extrapolate, or run
`python -c "from bench.growth import run; print(run(products=100_000))"` once.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import Result, fresh_pg_database
from bench.down import server_store
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.server_tables import change_log
from inbox.answers import SnapshotPlan, Tally, catch_up_replies, snapshot_replies
from inbox.catalog_reads import read_snapshot
from inbox.replica import FeedMemory, apply_down, positions
from outbox import catalog
from outbox.compaction import Retention, compact, log_bytes, log_rows
from schemas.codec import decode_terminal_inbox
from schemas.feed import CatchUpRequest, SnapshotRequest
from schemas.records import Product

STREAM = "productos:all"
TILL = TerminalIdentity("BG01", "L1", "PV1", "retail")
BATCH = 5_000  # records per catalog transaction


def run(products: int = 10_000, weeks: int = 52) -> Result:
    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as url:
        server = server_store(url)
        try:
            return _run(server, Path(tmp), products, weeks)
        finally:
            server.dispose()


def _run(server: sa.Engine, tmp: Path, products: int, weeks: int) -> Result:
    started = time.perf_counter()
    for week in range(weeks):
        _price_update(server, products, week)
        if week == weeks - 2:
            behind = _till_at_head(server, tmp / "behind.db")
    load_s = time.perf_counter() - started
    details: dict[str, Any] = {"products": products, "weeks": weeks, "load_s": round(load_s, 1)}
    details["none"] = _size(server) | _catch_up(server, behind, tmp / "none.db", products)

    keep_week = compact(server, Retention(keep_changes=products, keep_s=0, hold_s=0))
    details["keep_week"] = {"compact_s": round(keep_week.seconds, 2)} | _size(server)
    details["keep_week"] |= _catch_up(server, behind, tmp / "week.db", products)

    to_head = compact(server, Retention(keep_changes=0, keep_s=0, hold_s=0))
    details["to_head"] = {"compact_s": round(to_head.seconds, 2)} | _size(server)
    details["to_head"] |= _catch_up(server, behind, tmp / "head.db", products)

    none, week, head = details["none"], details["keep_week"], details["to_head"]
    scale = 100_000 / products
    details["extrapolated_100k"] = {
        "rows_none": none["rows"] * scale,
        "catch_up_log_s": round(none["catch_up_s"] * scale, 1),
        "catch_up_refresh_s": round(head["catch_up_s"] * scale, 1),
        "compact_keep_week_s": round(week["compact_s"] * scale, 1),
    }
    return Result(
        name="growth",
        metric=f"change-log rows after {weeks} weekly updates of {products:,} products, "
        "compacted to one week",
        value=week["rows"],
        baselines={"rows_without_compaction": none["rows"], "catch_up_s_log": none["catch_up_s"]},
        ratios={
            "rows_keep_week/none": round(week["rows"] / none["rows"], 4),
            "catch_up_keep_week/none": round(week["catch_up_s"] / none["catch_up_s"], 2),
            "catch_up_refresh/none": round(head["catch_up_s"] / none["catch_up_s"], 2),
        },
        targets={"rows_keep_week/none": f"<= {1.5 / weeks:.3f} (one week and a half)"},
        passed=week["rows"] / none["rows"] <= 1.5 / weeks,
        details=details,
    )


def _price_update(server: sa.Engine, products: int, week: int) -> None:
    """Every product's price changes (week 0 creates them); the feed relay's marks too."""
    price = Decimal(100 + week) / 100
    for start in range(0, products, BATCH):
        records = [
            Product(key=f"{n:07d}", name=f"Producto {n}", price=price, tax_rate=Decimal(21))
            for n in range(start, min(start + BATCH, products))
        ]
        with server.begin() as connection:
            catalog.upsert_many(connection, records)
            connection.execute(
                change_log.update()
                .where(change_log.c.published_at.is_(None))
                .values(published_at=time.time())
            )


def _till_at_head(server: sa.Engine, path: Path) -> Path:
    """A till whose replica holds the whole stream as of now (a full snapshot)."""
    till = make_engine(f"sqlite:///{path}")
    upgrade(till, "terminal")
    request = SnapshotRequest(
        terminal=TILL.terminal,
        location=TILL.location,
        pos=TILL.pos,
        terminal_kind=TILL.kind,
        request_id="bench-bootstrap",
        topics=["productos"],
    )
    plan = SnapshotPlan(request, [STREAM], {}, [])
    with read_snapshot(server, doing="bench snapshot") as reader:
        bodies = list(snapshot_replies(plan, reader, Tally()))
    _apply(till, bodies)
    till.dispose()
    return path


def _catch_up(server: sa.Engine, behind: Path, path: Path, products: int) -> dict[str, Any]:
    """The till one week behind asks for a catch-up; the server answers (from the log or
    with a refresh), the till applies it. Seconds, messages, and whether it is current."""
    shutil.copy(behind, path)
    till = make_engine(f"sqlite:///{path}")
    try:
        with till.connect() as connection:
            position = positions(connection, [STREAM])[STREAM]
        request = CatchUpRequest(
            terminal=TILL.terminal,
            location=TILL.location,
            pos=TILL.pos,
            terminal_kind=TILL.kind,
            stream=STREAM,
            from_seq=position + 1,
        )
        started = time.perf_counter()
        tally = Tally()
        with read_snapshot(server, doing="bench catch-up") as reader:
            head = reader.heads([STREAM])[STREAM]
            bodies = list(catch_up_replies(request, reader, tally))
        _apply(till, bodies)
        seconds = time.perf_counter() - started
        with till.connect() as connection:
            reached = positions(connection, [STREAM])[STREAM]
        return {
            "catch_up_s": round(seconds, 3),
            "messages": len(bodies),
            "changes": tally.changes,
            "records": tally.records,
            "current": reached == head and tally.changes + tally.records >= products,
        }
    finally:
        till.dispose()


def _apply(till: sa.Engine, bodies: list[bytes]) -> None:
    memory = FeedMemory()
    for body in bodies:
        message = decode_terminal_inbox(body)
        with till.begin() as connection:
            apply_down(connection, message, TILL, size=len(body), memory=memory)  # type: ignore[arg-type]


def _size(server: sa.Engine) -> dict[str, Any]:
    with server.connect() as connection:
        relation = connection.exec_driver_sql(
            "SELECT pg_total_relation_size('catalog_changes')"
        ).scalar_one()
        return {
            "rows": log_rows(connection),
            "bytes": log_bytes(connection),
            "table_bytes": relation,
        }
