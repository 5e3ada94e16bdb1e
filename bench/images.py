"""Image refresh: bytes moved by a re-pull after 1% of 5,000 product images changed,
against the full image pull of the same run. Target: at most 2%."""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from pathlib import Path

import msgspec
import sqlalchemy as sa

from bench import down
from bench.common import Result, fresh_pg_database
from bench.procs import Fleet


def run(products: int = 5_000, changed_ratio: float = 0.01) -> Result:
    from cajasync.processes.pull import pull
    from cajasync.samples.seed import seed_catalog

    with tempfile.TemporaryDirectory() as tmp, fresh_pg_database() as url:
        server = down.server_store(url)
        seed_catalog(server, products=products, images=True)
        [(path, terminal)] = down.terminals(Path(tmp), 1, uuid.uuid4().hex[:4].upper())
        fleet = Fleet([("requests", url)])
        try:
            fleet.go()
            full = pull(terminal, down.settings(), ["productos"], images=True, full=True)
            changed = _change_images(server, int(products * changed_ratio))
            again = pull(terminal, down.settings(), ["productos"], images=True)
        finally:
            fleet.close()
            down.delete_queues([path])
            server.dispose()
    full_bytes = full.bytes + full.image_bytes
    again_bytes = again.bytes + again.image_bytes
    ratio = again_bytes / full_bytes
    return Result(
        name="images",
        metric=f"bytes moved by a re-pull after {changed} of {products:,} images changed",
        value=again_bytes,
        baselines={"full_pull_bytes": full_bytes},
        ratios={"vs_full_pull": round(ratio, 4)},
        targets={"vs_full_pull": "<= 0.02"},
        passed=ratio <= 0.02 and again.images == changed,
        details={
            "full_images": full.images,
            "full_image_bytes": full.image_bytes,
            "refresh_images": again.images,
            "refresh_image_bytes": again.image_bytes,
            "refresh_record_bytes": again.bytes,
        },
    )


def _change_images(server: sa.Engine, count: int) -> int:
    """Give `count` products a new image (new content, so a new content address)."""
    from cajasync.core.server_tables import catalog_records
    from outbox import catalog
    from schemas.records import Product

    with server.begin() as connection:
        rows = connection.execute(
            sa.select(catalog_records.c.body)
            .where(catalog_records.c.topic == "productos", catalog_records.c.image.is_not(None))
            .order_by(catalog_records.c.key)
            .limit(count)
        ).all()
        for row in rows:
            product = msgspec.msgpack.decode(row.body, type=Product)
            data = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(product.key.encode()).digest() * 400
            sha = catalog.put_image(connection, data)
            catalog.upsert(connection, msgspec.structs.replace(product, image=sha))
    return len(rows)
