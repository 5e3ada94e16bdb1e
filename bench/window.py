"""`cajasync window` startup: time to the first paint, and to every count of the till
shown, on a till holding 100,000 products (and 1,000 sales).

Each start runs in a fresh Python process (`python -m bench.window --child DB`), so the
figure includes importing the window (Textual) and opening the till's database, as a
technician typing `cajasync window --db caja.db` waits for it (the interpreter's own
start, ~50 ms, is left out). The window runs headless at 132x40 against the real broker;
no server answers, which changes nothing before the counts are shown (the server's
counts come after, in a thread).

Baseline, same run: the same start on an empty till. Target: under 1 s to every count on
the 100,000-product till. The process's CPU seconds to the same points are in the
details: on a shared machine the wall time also holds the waits for a core.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from bench.common import BROKER_URL, Result, fill_outbox, new_terminal, sales

SIZE = (132, 40)
TARGET_S = 1.0
BATCH = 10_000


def run(products: int = 100_000, rounds: int = 3) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        empty = _till(Path(tmp), "WEMPTY", 0, 0)
        full = _till(Path(tmp), "WFULL", products, 1_000)
        baseline = [_start(empty) for _ in range(rounds)]
        measured = [_start(full) for _ in range(rounds)]
    cpu = statistics.median(m["counted_cpu_s"] for m in measured)
    paint = statistics.median(m["first_paint_s"] for m in measured)
    counted = statistics.median(m["counted_s"] for m in measured)
    base_paint = statistics.median(b["first_paint_s"] for b in baseline)
    base_counted = statistics.median(b["counted_s"] for b in baseline)
    return Result(
        name="window",
        metric=f"seconds from start to every till count shown, {products:,} products "
        f"(median of {rounds})",
        value=round(counted, 3),
        baselines={
            "empty_till_counted_s": round(base_counted, 3),
            "empty_till_first_paint_s": round(base_paint, 3),
        },
        ratios={
            "counted_vs_empty": round(counted / base_counted, 2),
            "first_paint_vs_empty": round(paint / base_paint, 2),
        },
        targets={"counted_s": f"< {TARGET_S}"},
        passed=counted < TARGET_S,
        details={
            "first_paint_s": round(paint, 3),
            "counted_cpu_s": round(cpu, 3),  # CPU of the process: what a loaded machine adds
            "empty_till_counted_cpu_s": round(
                statistics.median(b["counted_cpu_s"] for b in baseline), 3
            ),
            "runs": measured,
            "empty_runs": baseline,
            "products": products,
        },
    )


def _till(directory: Path, name: str, products: int, sold: int) -> str:
    """A till database holding `products` products in its replica and `sold` sales."""
    from cajasync.core.terminal_tables import replica
    from inbox.replica_store.sql import SqlReplicaStore
    from schemas.feed import Change
    from schemas.records import Product

    engine, _terminal = new_terminal(directory, name)
    store = SqlReplicaStore(engine)
    for start in range(0, products, BATCH):
        changes = [
            Change(
                stream="productos:all",
                seq=n + 1,
                topic="productos",
                key=f"779{n:010d}",
                version=1,
                record=Product(
                    key=f"779{n:010d}",
                    name=f"Producto de prueba número {n}",
                    price=Decimal(100 + n % 900) + Decimal("0.99"),
                    tax_rate=Decimal(21),
                ),
            )
            for n in range(start, min(start + BATCH, products))
        ]
        store.apply(changes, time.time())
    if sold:
        fill_outbox(engine, sales(sold))
    with engine.connect() as connection:
        held = connection.execute(replica.select().with_only_columns(replica.c.key)).all()
    assert len(held) == products
    path = str(engine.url.database)
    engine.dispose()
    return path


def _start(db: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.window", "--child", db],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _child(db: str) -> None:
    """One start of the window on `db`: seconds to the first paint and to the counts."""
    started, started_cpu = time.monotonic(), time.process_time()
    from cajasync.core.settings import load_settings
    from cli.window.app import SyncWindow
    from cli.window.command import window_context

    async def measure() -> dict[str, float]:
        with window_context(db, load_settings(broker_url=BROKER_URL), None) as ctx:
            app = SyncWindow(ctx)
            async with app.run_test(headless=True, size=SIZE) as pilot:
                while app.first_paint_at is None:
                    await pilot.pause(0.005)
                paint_cpu = time.process_time()
                while app.counted_at is None:
                    await pilot.pause(0.005)
                figures = {
                    "first_paint_s": round(app.first_paint_at - started, 4),
                    "counted_s": round(app.counted_at - started, 4),
                    "first_paint_cpu_s": round(paint_cpu - started_cpu, 4),
                    "counted_cpu_s": round(time.process_time() - started_cpu, 4),
                    "load_1min": os.getloadavg()[0],
                }
                app.exit()
            return figures

    print(json.dumps(asyncio.run(measure())), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2])
    else:
        raise SystemExit("run it as `python -m bench window`")
