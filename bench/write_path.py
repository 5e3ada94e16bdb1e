"""Write path: a POS transaction inserting a sale into its own table, with and without the outbox.

Target: median latency with the outbox ≤ 1.5× without. Same database file and settings
(SQLite WAL, synchronous=FULL, BEGIN IMMEDIATE), alternating the two variants.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Result, median, new_terminal, percentile, sales
from cajasync.samples.simulate import pos_metadata, pos_sales
from outbox.record import record
from schemas.codec import encode
from schemas.ops import Sale


def run(count: int = 1_000) -> Result:
    operations = sales(2 * count, seed=11)
    with tempfile.TemporaryDirectory() as tmp:
        engine, _terminal = new_terminal(Path(tmp))
        pos_metadata.create_all(engine)
        with_outbox: list[float] = []
        without: list[float] = []
        for index in range(count):
            without.append(_transaction(engine, operations[2 * index], outbox=False))
            with_outbox.append(_transaction(engine, operations[2 * index + 1], outbox=True))
        engine.dispose()
    base, measured = median(without), median(with_outbox)
    ratio = measured / base
    return Result(
        name="write_path",
        metric="median POS transaction latency with the outbox (ms)",
        value=round(measured * 1000, 3),
        baselines={"without_outbox_ms": round(base * 1000, 3)},
        ratios={"with_vs_without": round(ratio, 2)},
        targets={"with_vs_without": "<= 1.5"},
        passed=ratio <= 1.5,
        details={
            "transactions_each": count,
            "p99_with_ms": round(percentile(with_outbox, 0.99) * 1000, 3),
            "p99_without_ms": round(percentile(without, 0.99) * 1000, 3),
        },
    )


def _transaction(engine: object, sale: Sale, *, outbox: bool) -> float:
    ticket = encode(sale)
    start = time.perf_counter()
    with engine.begin() as connection:  # type: ignore[attr-defined]
        op_id = record(connection, sale).op_id if outbox else None
        connection.execute(
            pos_sales.insert().values(
                op_id=str(op_id or ""),
                book=sale.book,
                number=sale.number,
                total=sale.totals.total,
                voided=False,
                ticket=ticket,
            )
        )
    return time.perf_counter() - start
