"""Record-level diff: 100,000 products on both sides with 10 differences, till against the
server over the real broker (direct reply-to questions to a running request handler).

Baseline, same run: the full (key, version) list of the topic sent by the same server
through the same channel (one entries question for the whole key space). Targets: the
exact 10 keys, under 2 s, at most 5% of the full list's bytes.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from bench import down
from bench.common import Result, fresh_pg_database
from bench.procs import Fleet

if TYPE_CHECKING:
    from cajasync.processes.diff import DiffResult

TOPIC = "productos"


def run(products: int = 100_000, rounds: int = 3) -> Result:
    from cajasync.core.periods import Period
    from cajasync.processes.diff import diff
    from cajasync.processes.pull import pull
    from cajasync.samples.seed import seed_catalog

    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as url:
        server = down.server_store(url)
        seed_catalog(server, products=products)
        [(path, terminal)] = down.terminals(Path(tmp), 1, uuid.uuid4().hex[:4].upper())
        fleet = Fleet([("requests", url)])
        try:
            fleet.go()
            pull(terminal, down.settings(), [TOPIC], full=True, timeout=600)
            expected = _inject(server, terminal)
            runs = []
            for _ in range(rounds):  # the first is cold: the server reads and hashes anew
                time.sleep(11)  # past the server's 10 s entry cache: every run pays it
                runs.append(diff(terminal, down.settings(), TOPIC, Period(), timeout=60))
            full_bytes, full_s, full_count = _full_list(terminal)
        finally:
            fleet.close()
            down.delete_queues([path])
            server.dispose()
    found = runs[-1]
    got = _keys(found)
    exact = all(_keys(r) == expected for r in runs)
    seconds = max(r.seconds for r in runs)
    ratio = found.bytes_moved / full_bytes
    return Result(
        name="diff",
        metric=f"seconds to find 10 differences in {products:,} products (slowest of {rounds})",
        value=round(seconds, 3),
        baselines={"full_list_bytes": full_bytes, "full_list_s": round(full_s, 3)},
        ratios={"bytes_vs_full_list": round(ratio, 4)},
        targets={"bytes_vs_full_list": "<= 0.05", "seconds": "< 2", "differences": "exact 10"},
        passed=exact and seconds < 2 and ratio <= 0.05,
        details={
            "bytes_moved": found.bytes_moved,
            "rounds": found.rounds,
            "run_seconds": [round(r.seconds, 3) for r in runs],
            "exact": exact,
            "found": got,
            "expected": expected,
            "full_list_keys": full_count,
        },
    )


def _keys(found: DiffResult) -> dict[str, list[str]]:
    return {
        "missing_on_server": sorted(found.missing_on_server),
        "missing_on_terminal": sorted(found.missing_on_terminal),
        "version_differs": sorted(v.key for v in found.version_differs),
    }


def _inject(server: sa.Engine, terminal: sa.Engine) -> dict[str, list[str]]:
    """3 products deleted and 3 repriced on the server; 2 gone from the till's replica and
    2 strays added to it: 10 keys, none of them live events (no feed relay runs)."""
    import msgspec

    from cajasync.core.terminal_tables import replica
    from outbox import catalog
    from schemas.records import Product

    with server.connect() as connection:
        keys = sorted(
            connection.execute(
                sa.text("SELECT key FROM catalog_records WHERE topic = :t AND NOT deleted"),
                {"t": TOPIC},
            ).scalars()
        )
    step = len(keys) // 11
    picked = [keys[step * (i + 1)] for i in range(8)]
    deleted, repriced, gone = picked[:3], picked[3:6], picked[6:8]
    with server.begin() as connection:
        for key in deleted:
            catalog.delete(connection, TOPIC, key)
        for key in repriced:
            current = catalog.get(connection, TOPIC, key)
            assert isinstance(current, Product)
            catalog.upsert(
                connection, msgspec.structs.replace(current, price=current.price + Decimal(1))
            )
    strays = ["ZZ-STRAY-1", "ZZ-STRAY-2"]
    with terminal.begin() as connection:
        connection.execute(
            sa.delete(replica).where(replica.c.topic == TOPIC, replica.c.key.in_(gone))
        )
        template = (
            connection.execute(
                sa.select(replica)
                .where(replica.c.topic == TOPIC, replica.c.deleted.is_(False))
                .limit(1)
            )
            .one()
            ._asdict()
        )
        for key in strays:
            connection.execute(replica.insert().values({**template, "key": key}))
    return {
        "missing_on_server": sorted(deleted + strays),
        "missing_on_terminal": sorted(gone),
        "version_differs": sorted(repriced),
    }


def _full_list(terminal: sa.Engine) -> tuple[int, float, int]:
    """The baseline: the whole (key, version) list, asked of the same server the same way."""
    from cajasync.broker.asking import pika_asking
    from cajasync.core.db import reading
    from cajasync.core.digests import ROOT
    from cajasync.core.identity import load_identity
    from cajasync.core.periods import Period
    from cajasync.processes.diff import ServerSide

    with reading(terminal) as connection:
        identity = load_identity(connection)
    started = time.perf_counter()
    with pika_asking(down.settings(), identity) as asking:
        side = ServerSide(asking, identity, TOPIC, Period(), timeout=60)
        [entries] = side.entries([ROOT])
    return side.bytes_moved, time.perf_counter() - started, len(entries.keys)
