"""Relay throughput: outbox rows until broker-confirmed, against raw pika and a naive relay.

Targets: cajasync ≥ 0.5× raw pipelined pika (no database at all) and ≥ 5× a relay that
publishes with BlockingChannel.confirm_delivery() (one round trip per message). Same run,
same exchange, same quorum queue (`cajasync.ops`), purged between runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.baselines import naive_confirm_each, raw_pipelined
from bench.common import (
    BROKER_URL,
    Result,
    fill_outbox,
    median,
    new_terminal,
    outbox_bodies,
    purge_ops,
    sales,
)
from cajasync.core.settings import load_settings
from cajasync.core.terminal_tables import PENDING, outbox


def run(count: int = 20_000, naive_count: int = 2_000, rounds: int = 3) -> Result:
    settings = load_settings(broker_url=BROKER_URL)
    with tempfile.TemporaryDirectory() as tmp:
        engine, terminal = new_terminal(Path(tmp))
        fill_outbox(engine, sales(count))
        items = outbox_bodies(engine)
        relay_rates, raw_rates, naive_rates = [], [], []
        for _ in range(rounds):  # interleaved, so drift in the machine hits all three alike
            purge_ops()
            raw_rates.append(
                count / raw_pipelined(BROKER_URL, terminal, items, settings.publish_window)
            )
            purge_ops()
            relay_rates.append(count / _timed_drain(engine, settings))
            purge_ops()
            naive_rates.append(
                naive_count / naive_confirm_each(BROKER_URL, terminal, items[:naive_count])
            )
        purge_ops()
        engine.dispose()
    relay, raw, naive = median(relay_rates), median(raw_rates), median(naive_rates)
    vs_raw, vs_naive = relay / raw, relay / naive
    return Result(
        name="relay",
        metric="operations/s until broker-confirmed (median of rounds)",
        value=round(relay),
        baselines={"raw_pika_pipelined": round(raw), "naive_confirm_each": round(naive)},
        ratios={
            "vs_raw_pika_pipelined": round(vs_raw, 2),
            "vs_naive_confirm_each": round(vs_naive, 1),
        },
        targets={"vs_raw_pika_pipelined": ">= 0.5", "vs_naive_confirm_each": ">= 5"},
        passed=vs_raw >= 0.5 and vs_naive >= 5,
        details={
            "operations": count,
            "naive_operations": naive_count,
            "rounds": rounds,
            "window": settings.publish_window,
            "relay_rates": [round(r) for r in relay_rates],
            "raw_rates": [round(r) for r in raw_rates],
            "naive_rates": [round(r) for r in naive_rates],
        },
    )


def _timed_drain(engine: sa.Engine, settings: object) -> float:
    from cajasync.processes.terminal import drain

    with engine.begin() as connection:
        connection.execute(outbox.update().values(state=PENDING, sent_at=None, attempts=0))
    start = time.perf_counter()
    confirmed = drain(engine, settings, timeout=600)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    with engine.connect() as connection:
        left = connection.execute(
            sa.select(sa.func.count()).where(outbox.c.state == PENDING)
        ).scalar_one()
    if left:
        raise RuntimeError(f"drain left {left} rows pending (confirmed {confirmed})")
    return elapsed
